"""Timeframe names (``"15m"``, ``"1h"``, ``"4h"``, ``"1d"``) and the durations they stand for."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["infer_timeframe", "parse_timeframe", "periods_per_year", "timeframe_name"]

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
    """Bars of ``timeframe`` in a trading year: 260 days x 24 h / bar length (6,240 for 1h).

    Example:
        >>> periods_per_year("1h"), periods_per_year("4h"), periods_per_year("1d")
        (6240.0, 1560.0, 260.0)
    """
    return TRADING_DAYS_PER_YEAR * pd.Timedelta(days=1) / parse_timeframe(timeframe)


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """Timeframe name of the median spacing of consecutive timestamps (weekend gaps are rare
    enough not to move the median)."""
    if len(index) < 2:
        raise ValueError(f"need at least 2 timestamps to infer a timeframe; got {len(index)}")
    diffs = np.diff(index.as_unit("ns").asi8)
    return timeframe_name(pd.Timedelta(int(np.median(diffs)), unit="ns"))
