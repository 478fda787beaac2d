"""Timeframe names (``"15m"``, ``"1h"``, ``"4h"``, ``"1d"``), the durations they stand for and
the FX trading calendar that bins bars into them."""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "FX_DAY_CLOSE",
    "FxBins",
    "calendar_periods_per_year",
    "fx_bins",
    "infer_timeframe",
    "parse_timeframe",
    "periods_per_year",
    "rollover_nights",
    "timeframe_name",
]

FX_DAY_CLOSE = ("America/New_York", 17)
"""The FX day ends at 17:00 New York time (DST-aware): 22:00 UTC in winter, 21:00 in summer."""
_SHIFT = pd.Timedelta(hours=24 - FX_DAY_CLOSE[1])  # New York wall time + 7 h: day starts at 0:00

_PATTERN = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$", re.IGNORECASE)
_UNIT_MINUTES = {"m": 1, "min": 1, "h": 60, "d": 1440}

TRADING_DAYS_PER_YEAR = 260
"""FX trades about 260 days a year (52 weeks x 5 days); 6,240 hourly bars (DOMAIN.md)."""


def parse_timeframe(timeframe: str) -> pd.Timedelta:
    """Duration of one bar of ``timeframe``.

    Args:
        timeframe: A count and a unit: ``m``/``min`` (minutes), ``h`` (hours) or ``d`` (days),
            e.g. ``"15m"``, ``"1h"``, ``"4h"``, ``"1d"``.

    Returns:
        The bar length.

    Raises:
        ValueError: When the name is not of that form.

    Example:
        >>> parse_timeframe("4h")
        Timedelta('0 days 04:00:00')
    """
    match = _PATTERN.match(str(timeframe))
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(
            f"timeframe must be a positive count and a unit among m, min, h, d "
            f"(e.g. '15m', '1h', '4h', '1d'); got {timeframe=}"
        )
    return pd.Timedelta(minutes=int(match.group(1)) * _UNIT_MINUTES[match.group(2).lower()])


def timeframe_name(delta: pd.Timedelta) -> str:
    """Canonical name of a bar length: whole days as ``"1d"``, whole hours as ``"4h"``, else
    minutes (``"15m"``)."""
    minutes = int(delta / pd.Timedelta(minutes=1))
    if minutes <= 0 or pd.Timedelta(minutes=minutes) != delta:
        raise ValueError(f"bar length must be a positive whole number of minutes; got {delta=}")
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def periods_per_year(timeframe: str) -> float:
    """Nominal bars of ``timeframe`` in a trading year: 260 days x 24 h / bar length (6,240 for
    1h). `DataManager` counts them on the bars instead (`calendar_periods_per_year`).

    Example:
        >>> periods_per_year("1h"), periods_per_year("4h"), periods_per_year("1d")
        (6240.0, 1560.0, 260.0)
    """
    return TRADING_DAYS_PER_YEAR * pd.Timedelta(days=1) / parse_timeframe(timeframe)


class FxBins(NamedTuple):
    """Bins of the FX calendar over a bar index (see `fx_bins`)."""

    codes: np.ndarray
    """int64 bin number of every bar, non-decreasing from 0."""
    opens: pd.DatetimeIndex
    """UTC open time of each bin: its session's nominal open, or its first bar if earlier."""
    closes: pd.DatetimeIndex
    """UTC nominal close time of each bin (a Friday bin may hold bars after it)."""


def _check_divides_a_day(timeframe: str) -> pd.Timedelta:
    step = parse_timeframe(timeframe)
    if step > pd.Timedelta(days=1) or pd.Timedelta(days=1) % step != pd.Timedelta(0):
        raise ValueError(
            f"resampling timeframes must divide the 24-hour FX day (e.g. '15m', '1h', '4h', "
            f"'8h', '1d'); got {timeframe=}"
        )
    return step


def fx_bins(index: pd.DatetimeIndex, timeframe: str) -> FxBins:
    """Bin bar open times into ``timeframe`` bins of the FX trading calendar.

    The FX day runs from 17:00 to 17:00 New York time (DST-aware), so Monday's day opens on
    Sunday at 17:00 New York; bins of a timeframe that divides the day are aligned on that open
    (4h: 17:00, 21:00, 01:00 ... New York). A bar of a weekend day is merged into the nearest
    trading day: one before Sunday's open (a "Sunday stub") into Monday's first bin, one after
    Friday's close into Friday's last bin. US clocks change on Sunday at 02:00, while the
    market is shut, so every trading week has one UTC offset.

    Args:
        index: Bar open times (UTC, or tz-aware), increasing.
        timeframe: Bin length; must divide 24 hours (``"1d"`` is the FX day).

    Returns:
        The bin of every bar and each bin's open and close (UTC).

    Raises:
        ValueError: When ``timeframe`` does not divide a day.

    Example:
        >>> week = pd.date_range("2017-01-08 22:00", "2017-01-13 21:00", freq="1h", tz="UTC")
        >>> fx_bins(week, "1d").opens.hour.tolist()  # Sunday to Thursday, 17:00 New York
        [22, 22, 22, 22, 22]
    """
    step = _check_divides_a_day(timeframe)
    index = pd.DatetimeIndex(index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    zone = FX_DAY_CLOSE[0]
    shifted = index.tz_convert(zone).tz_localize(None) + _SHIFT  # trading day starts at 00:00
    day = shifted.floor("D")
    weekday = day.day_of_week.to_numpy()
    one_day = pd.Timedelta(days=1)
    # Saturday's "day" (after Friday's close) joins Friday's last bin; Sunday's (before the
    # Sunday open) joins Monday's first
    shifted = pd.DatetimeIndex(np.where(
        weekday == 5, (day - pd.Timedelta(1, "ns")).to_numpy(),
        np.where(weekday == 6, (day + one_day).to_numpy(), shifted.to_numpy())))
    keys = shifted.floor(step).as_unit("ns").asi8
    unique, codes = np.unique(keys, return_inverse=True)
    starts = pd.DatetimeIndex(unique.astype("datetime64[ns]"))

    def to_utc(wall: pd.DatetimeIndex) -> pd.DatetimeIndex:
        return (wall - _SHIFT).tz_localize(
            zone, ambiguous=np.ones(len(wall), dtype=bool), nonexistent="shift_forward"
        ).tz_convert("UTC")

    opens = to_utc(starts)
    first_bar = np.full(len(unique), np.iinfo(np.int64).max)
    np.minimum.at(first_bar, codes, index.as_unit("ns").asi8)
    opens = pd.DatetimeIndex(np.minimum(opens.as_unit("ns").asi8, first_bar), tz="UTC")
    return FxBins(codes.astype(np.int64), opens, to_utc(starts + step))


def rollover_nights(index: pd.DatetimeIndex) -> np.ndarray:
    """Swap nights charged to a position held from each bar into the next, at the daily roll.

    The roll is the end of the FX day, 17:00 New York (`FX_DAY_CLOSE`, DST-aware); bar ``t``
    gets the rolls between its trading day (`fx_bins` ``"1d"``) and bar ``t - 1``'s: one per
    trading day that ended, three for Wednesday's (spot settles two days later, so
    Wednesday's roll carries the weekend; Friday's counts one). Holidays are not modelled.

    Args:
        index: Bar open times (UTC, or tz-aware), increasing.

    Returns:
        int64 array of the same length; 0 for the first bar and within a trading day.

    Example:
        >>> week = pd.date_range("2017-01-09 20:00", periods=4, freq="1d", tz="UTC")
        >>> rollover_nights(week).tolist()  # Monday, Tuesday, Wednesday, Thursday 20:00 UTC
        [0, 1, 1, 3]
    """
    bins = fx_bins(index, "1d")
    closes = bins.closes[bins.codes].tz_convert(FX_DAY_CLOSE[0])
    # trading date = New York date of the day's close (a weekday)
    trading_date = closes.tz_localize(None).normalize().to_numpy().astype("datetime64[D]")
    if len(trading_date) == 0:
        return np.zeros(0, dtype=np.int64)
    before, after = trading_date[:-1], trading_date[1:]
    days_ended = np.busday_count(before, after)
    wednesdays_ended = np.busday_count(before, after, weekmask="0010000")
    return np.concatenate([[0], days_ended + 2 * wednesdays_ended]).astype(np.int64)


def calendar_periods_per_year(index: pd.DatetimeIndex) -> float:
    """Bars a year on the calendar the bars follow: the median number of bars per FX trading
    day (`fx_bins` days) x 260 trading days.

    24 for hourly bars around the clock (6,240 a year), 23 for a broker that pauses an hour at
    the roll (5,980), 6 for 4h bins, 1 for daily bins. The median ignores short days (the
    first and last of a file, holidays).
    """
    codes = fx_bins(index, "1d").codes
    bars_per_day = float(np.median(np.bincount(codes)))
    return TRADING_DAYS_PER_YEAR * bars_per_day


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """Timeframe name of the median spacing of consecutive timestamps (weekend gaps are rare
    enough not to move the median)."""
    if len(index) < 2:
        raise ValueError(f"need at least 2 timestamps to infer a timeframe; got {len(index)}")
    diffs = np.diff(index.as_unit("ns").asi8)
    return timeframe_name(pd.Timedelta(int(np.median(diffs)), unit="ns"))
