"""Resampling to higher timeframes, causal bar features and a train-only feature normaliser."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fxai_tune.data._timeframes import fx_bins

__all__ = [
    "FEATURE_NAMES",
    "SESSIONS",
    "SESSION_FEATURE_NAMES",
    "FeatureNormalizer",
    "compute_features",
    "resample_bars",
]

FEATURE_NAMES = (
    "log_return",
    "range",
    "body",
    "volatility",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
)
"""Columns of `compute_features`, in order."""

SESSIONS = {
    "tokyo_open": ("Asia/Tokyo", 9, 18),
    "london_open": ("Europe/London", 8, 17),
    "new_york_open": ("America/New_York", 8, 17),
}
"""Trading sessions: feature name -> (IANA zone, local open hour, local close hour), Monday to
Friday local time; London and New York follow their own daylight saving (Japan has none)."""

SESSION_FEATURE_NAMES = tuple(SESSIONS)
"""Columns `compute_features` appends with ``sessions=True``, in order."""

_SESSION_SAMPLE = pd.Timedelta(minutes=15)

_AGGREGATIONS = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}


def resample_bars(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Aggregate bars into ``timeframe`` bins of the FX calendar, dropping empty bins.

    Bins follow the FX trading day, 17:00 to 17:00 New York time (DST-aware; `fx_bins`):
    daily bins are the five trading days of a week, Sunday's open merged into Monday, and 4h
    bins start at 17:00, 21:00, 01:00 ... New York. A bin is labelled by its open time ``T``
    and holds the bars of its session. ``spread`` is averaged.

    Args:
        bars: Bars as `load_bars` returns them.
        timeframe: Target bar length, dividing 24 hours, e.g. ``"4h"`` or ``"1d"``.

    Returns:
        The resampled bars, same columns.

    Example:
        >>> daily = resample_bars(load_sample(), "1d")  # doctest: +SKIP
    """
    bins = fx_bins(pd.DatetimeIndex(bars.index), timeframe)
    aggregations = {k: v for k, v in _AGGREGATIONS.items() if k in bars}
    if "spread" in bars:
        aggregations["spread"] = "mean"
    out = bars.groupby(bins.codes, sort=True).agg(aggregations)
    out.index = bins.opens[out.index.to_numpy()].rename(bars.index.name)
    out.attrs = dict(bars.attrs)
    return out


def session_features(index: pd.DatetimeIndex, bar_length: pd.Timedelta) -> pd.DataFrame:
    """Share of each bar ``[T, T + bar_length)`` during which each of `SESSIONS` is open.

    For an hourly bar this is 0 or 1; a 4h or daily bar gets the open share. Local time with
    daylight saving: the London session opens at 07:00 UTC in summer and 08:00 in winter.
    Measured every 15 minutes (or at the bar's midpoint for shorter bars).
    """
    index = pd.DatetimeIndex(index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    samples = max(1, min(96, int(bar_length / _SESSION_SAMPLE)))
    offsets = ((np.arange(samples) + 0.5) * (pd.Timedelta(bar_length).value / samples))
    points = pd.DatetimeIndex(
        (index.as_unit("ns").asi8[:, None] + offsets.astype(np.int64)).ravel(), tz="UTC"
    )
    out = {}
    for name, (zone, open_hour, close_hour) in SESSIONS.items():
        local = points.tz_convert(zone)
        hours = local.hour + local.minute / 60.0
        is_open = (local.day_of_week < 5) & (hours >= open_hour) & (hours < close_hour)
        out[name] = np.asarray(is_open, dtype=np.float64).reshape(len(index), samples).mean(1)
    return pd.DataFrame(out, index=index)


def compute_features(bars: pd.DataFrame, *, volatility_window: int = 24,
                     sessions: bool = False,
                     bar_length: pd.Timedelta | None = None) -> pd.DataFrame:
    """Causal per-bar features: row ``t`` uses bars ``<= t`` only.

    Columns (`FEATURE_NAMES`): log return of the close, high-low range / close,
    body (close - open) / close, rolling standard deviation of log returns over
    ``volatility_window`` bars, and time of day and day of week as sin/cos pairs (of the bar's
    open time, UTC). With ``sessions``, also `SESSION_FEATURE_NAMES` (`session_features`).
    Warm-up NaNs are filled with 0.

    Args:
        bars: Bars with ``open, high, low, close`` and a DatetimeIndex.
        volatility_window: Bars in the rolling volatility window (>= 2).
        sessions: Append the Tokyo, London and New York session columns.
        bar_length: Bar length for the session shares; None: the median bar spacing.

    Returns:
        float64 features, same index as ``bars``.
    """
    if volatility_window < 2:
        raise ValueError(f"volatility_window must be >= 2; got {volatility_window=}")
    close = bars["close"].to_numpy(dtype=np.float64)
    log_return = np.zeros(len(close))
    log_return[1:] = np.diff(np.log(close))
    returns = pd.Series(log_return, index=bars.index)
    volatility = returns.rolling(volatility_window, min_periods=2).std(ddof=1)
    index = pd.DatetimeIndex(bars.index)
    day_fraction = (index.hour * 60 + index.minute).to_numpy() / 1440.0
    week_fraction = (index.day_of_week.to_numpy() + day_fraction) / 7.0
    features = pd.DataFrame(
        {
            "log_return": log_return,
            "range": (bars["high"].to_numpy() - bars["low"].to_numpy()) / close,
            "body": (close - bars["open"].to_numpy()) / close,
            "volatility": volatility.to_numpy(),
            "tod_sin": np.sin(2 * np.pi * day_fraction),
            "tod_cos": np.cos(2 * np.pi * day_fraction),
            "dow_sin": np.sin(2 * np.pi * week_fraction),
            "dow_cos": np.cos(2 * np.pi * week_fraction),
        },
        index=bars.index,
    )
    if sessions:
        if bar_length is None:
            bar_length = pd.Timedelta(int(np.median(np.diff(index.as_unit("ns").asi8))), "ns")
        shares = session_features(index, bar_length)
        for name in SESSION_FEATURE_NAMES:
            features[name] = shares[name].to_numpy()
    return features.fillna(0.0)


class FeatureNormalizer:
    """Standardise features with a mean and standard deviation fitted on training rows only.

    Args:
        clip: Normalised values are clipped to ``[-clip, clip]``.
        min_std: Columns whose training std is below this (e.g. a constant time-of-day on daily
            bars) are only centred.

    Example:
        >>> norm = FeatureNormalizer(clip=10.0).fit(train_features)  # doctest: +SKIP
        >>> all_rows = norm.transform(features)  # doctest: +SKIP
    """

    def __init__(self, *, clip: float = 10.0, min_std: float = 1e-12) -> None:
        if clip <= 0:
            raise ValueError(f"clip must be > 0; got {clip=}")
        self.clip = float(clip)
        self.min_std = float(min_std)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, features: np.ndarray | pd.DataFrame) -> FeatureNormalizer:
        """Fit mean and std on ``features`` (the training rows); returns ``self``."""
        values = np.asarray(features, dtype=np.float64)
        if values.ndim != 2 or len(values) == 0:
            raise ValueError(f"fit needs a non-empty 2-D array; got shape {values.shape}")
        self.mean = values.mean(axis=0)
        std = values.std(axis=0)
        self.std = np.where(std < self.min_std, 1.0, std)
        return self

    def transform(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Normalise and clip ``features`` with the fitted statistics; float32 output."""
        if self.mean is None or self.std is None:
            raise RuntimeError("FeatureNormalizer.transform called before fit")
        values = np.asarray(features, dtype=np.float64)
        out = np.clip((values - self.mean) / self.std, -self.clip, self.clip)
        return out.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state, e.g. to store next to a checkpoint."""
        return {
            "clip": self.clip,
            "min_std": self.min_std,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.clip = float(state.get("clip", self.clip))
        self.min_std = float(state.get("min_std", self.min_std))
        mean, std = state.get("mean"), state.get("std")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
