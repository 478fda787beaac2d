"""Seeded synthetic FX bars with regimes and a planted, learnable signal of known strength.

Per-bar log returns follow an AR(1) process plus a regime term::

    r[t] = signal_strength * r[t-1] + regime[t] + volatility * sqrt(1 - signal_strength**2) * e[t]

with ``e ~ N(0, 1)``; the innovation is scaled so that the stationary standard deviation of
``r`` is ``volatility`` whatever the signal strength. The regime term is a constant drift in a
``"trend"`` segment, a pull of the log price back to the segment's first price in a
``"mean_reversion"`` segment, and zero in a ``"random_walk"`` one. Since
``E[r[t+1] | bars <= t] ~ signal_strength * r[t]``, an agent that sees the last return can
exploit the signal; `oracle_positions` is the policy that does exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fxai_tune.data._timeframes import FX_DAY_CLOSE, parse_timeframe

__all__ = [
    "REGIMES",
    "SyntheticConfig",
    "fx_timestamps",
    "generate_synthetic_bars",
    "oracle_positions",
]

REGIMES = ("trend", "mean_reversion", "random_walk")
"""Regimes `SyntheticConfig.regimes` may name."""

_TREND, _MEAN_REVERSION = REGIMES.index("trend"), REGIMES.index("mean_reversion")

_ROLL_HOURS = (21, 22)
"""UTC hours of the daily roll, when FX spreads widen (DOMAIN.md)."""


@dataclass
class SyntheticConfig:
    """How to generate a synthetic FX series (`generate_synthetic_bars`)."""

    seed: int = 0
    """Seed of the random generator: same seed and config, same bars."""
    n_bars: int = 6000
    """Number of bars to generate."""
    timeframe: str = "1h"
    """Bar length (``"15m"``, ``"1h"``, ``"4h"``, ``"1d"`` ...)."""
    start: str = "2020-01-05 22:00"
    """Open time (UTC) of the first bar; the default is a Sunday FX open (17:00 New York).
    Later bars follow New York's clock (`fx_timestamps`)."""
    start_price: float = 1.10
    """Open price of the first bar."""
    regimes: tuple[str, ...] = REGIMES
    """Regimes the segments are drawn from (uniformly), among ``REGIMES``."""
    segment_bars: tuple[int, int] = (200, 800)
    """Inclusive range of a regime segment's length in bars, drawn uniformly per segment."""
    volatility: float = 0.001
    """Standard deviation of the per-bar log return (0.001 ~ 11 pips on EUR/USD hourly)."""
    trend_drift: float = 0.05
    """Per-bar drift of a trend segment as a fraction of ``volatility`` (sign drawn per
    segment)."""
    mean_reversion_speed: float = 0.02
    """Fraction of the log-price distance to the segment anchor pulled back per bar."""
    spread_pips: float = 0.5
    """Bid/ask spread in pips in liquid hours."""
    roll_spread_multiplier: float = 3.0
    """Spread multiplier at the daily roll (21:00-22:59 UTC)."""
    pip_size: float = 0.0001
    """Price of one pip (0.0001 for EUR/USD, 0.01 for JPY pairs)."""
    signal_strength: float = 0.0
    """AR(1) coefficient of per-bar log returns, in (-1, 1); 0 plants no signal."""

    def __post_init__(self) -> None:
        self.regimes = tuple(self.regimes)
        self.segment_bars = (int(self.segment_bars[0]), int(self.segment_bars[1]))
        parse_timeframe(self.timeframe)
        try:
            pd.Timestamp(self.start)
        except ValueError as err:
            raise ValueError(f"start must be a timestamp; got start={self.start!r}") from err
        if not self.regimes or any(r not in REGIMES for r in self.regimes):
            raise ValueError(
                f"regimes must be a non-empty subset of {REGIMES}; got {self.regimes=}"
            )
        low, high = self.segment_bars
        if not 1 <= low <= high:
            raise ValueError(
                f"segment_bars must be (min, max) with 1 <= min <= max; got {low=}, {high=}"
            )
        if not -1.0 < self.signal_strength < 1.0:
            raise ValueError(f"signal_strength must lie in (-1, 1); got {self.signal_strength=}")
        checks = (  # (field, holds, rule)
            ("n_bars", self.n_bars >= 2, ">= 2"),
            ("start_price", self.start_price > 0, "> 0"),
            ("volatility", self.volatility > 0, "> 0"),
            ("spread_pips", self.spread_pips >= 0, ">= 0"),
            ("roll_spread_multiplier", self.roll_spread_multiplier >= 1, ">= 1"),
            ("pip_size", self.pip_size > 0, "> 0"),
            ("mean_reversion_speed", 0 <= self.mean_reversion_speed < 1, "in [0, 1)"),
        )
        for name, holds, rule in checks:
            if not holds:
                raise ValueError(f"{name} must be {rule}; got {name}={getattr(self, name)!r}")


def fx_timestamps(start: str | pd.Timestamp, n_bars: int, timeframe: str) -> pd.DatetimeIndex:
    """``n_bars`` bar open times from ``start`` every ``timeframe`` of New York wall time,
    skipping the FX weekend, Friday 17:00 to Sunday 17:00 New York (`FX_DAY_CLOSE`,
    DST-aware): Sunday 22:00 to Friday 22:00 UTC in winter, 21:00 to 21:00 in summer, so
    every trading day of the calendar (`fx_bins`) gets the same number of bars.

    The grid follows New York's clock, so bars stay aligned on the FX day's 17:00 open
    across daylight saving changes; those fall on Sunday 02:00, inside the weekend.

    Example:
        >>> fx_timestamps("2020-07-05 21:00", 2, "1h").hour.tolist()  # Sunday open, EDT
        [21, 22]
    """
    step = parse_timeframe(timeframe)
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tz is None else first.tz_convert("UTC")
    zone, close_hour = FX_DAY_CLOSE
    wall_start = first.tz_convert(zone).tz_localize(None)
    to_trading_day = pd.Timedelta(hours=24 - close_hour)  # the FX day then starts at 00:00
    stamps = pd.DatetimeIndex([], dtype="datetime64[ns, UTC]")
    periods = int(n_bars * 1.5) + 16
    while len(stamps) < n_bars:
        wall = pd.date_range(wall_start, periods=periods, freq=step, unit="ns")
        weekend = (wall + to_trading_day).day_of_week >= 5  # Saturday and Sunday FX days
        wall = wall[~np.asarray(weekend)]
        stamps = wall.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").tz_convert("UTC")
        stamps = stamps[stamps >= first]
        periods *= 2
    return stamps[:n_bars]


def generate_synthetic_bars(cfg: SyntheticConfig) -> pd.DataFrame:
    """Generate bars as `load_bars` returns them, plus a ``spread`` column (price units).

    Args:
        cfg: What to generate; the same config (seed included) gives the same frame.

    Returns:
        Bars on FX trading hours (weekends skipped), ``open[t] == close[t-1]``.

    Example:
        >>> cfg = SyntheticConfig(seed=1, n_bars=500, signal_strength=0.3)
        >>> bars = generate_synthetic_bars(cfg)
        >>> len(bars), list(bars.columns)
        (500, ['open', 'high', 'low', 'close', 'volume', 'spread'])
    """
    rng = np.random.default_rng(cfg.seed)
    n, phi, vol = cfg.n_bars, cfg.signal_strength, cfg.volatility
    noise = rng.standard_normal(n) * vol * np.sqrt(1.0 - phi**2)
    # Regime segments: (kind, drift sign) per bar.
    kinds = np.empty(n, dtype=np.int8)
    signs = np.empty(n)
    t = 0
    while t < n:
        length = int(rng.integers(cfg.segment_bars[0], cfg.segment_bars[1] + 1))
        kinds[t : t + length] = REGIMES.index(cfg.regimes[int(rng.integers(len(cfg.regimes)))])
        signs[t : t + length] = 1.0 if rng.random() < 0.5 else -1.0
        t += length
    drift = cfg.trend_drift * vol
    kappa = cfg.mean_reversion_speed
    returns = np.empty(n)
    log_price, previous, anchor = 0.0, 0.0, 0.0
    for t in range(n):  # sequential: the mean-reversion term depends on the path so far
        if t == 0 or kinds[t] != kinds[t - 1] or signs[t] != signs[t - 1]:
            anchor = log_price
        if kinds[t] == _TREND:
            regime = drift * signs[t]
        elif kinds[t] == _MEAN_REVERSION:
            regime = -kappa * (log_price - anchor)
        else:
            regime = 0.0
        previous = phi * previous + regime + noise[t]
        returns[t] = previous
        log_price += previous
    close = cfg.start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([cfg.start_price], close[:-1]))
    wick = 0.5 * vol
    high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(n)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(n)) * wick)
    volume = np.round(rng.lognormal(np.log(1000.0), 0.5, n))
    index = fx_timestamps(cfg.start, n, cfg.timeframe).rename("timestamp")
    roll = np.isin(index.hour, _ROLL_HOURS)
    spread = cfg.spread_pips * cfg.pip_size * np.where(roll, cfg.roll_spread_multiplier, 1.0)
    bars = pd.DataFrame(
        {
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "spread": spread,
        },
        index=index,
    )
    bars.attrs["source"] = f"synthetic(seed={cfg.seed})"
    return bars


def oracle_positions(bars: pd.DataFrame, signal_strength: float) -> np.ndarray:
    """The position (+1 long, -1 short, 0 flat) the oracle holds over bar ``t + 1``, decided
    from bars ``<= t``: the sign of the expected next return ``signal_strength * r[t]``.

    Args:
        bars: Bars with a ``close`` column (e.g. from `generate_synthetic_bars`).
        signal_strength: The AR(1) coefficient the oracle believes in; 0 means always flat.

    Returns:
        int8 array of shape ``(len(bars),)``; entry ``t`` is earned by ``r[t + 1]``.

    Example:
        >>> bars = generate_synthetic_bars(SyntheticConfig(n_bars=1000, signal_strength=0.3))
        >>> pos = oracle_positions(bars, 0.3)
        >>> r = np.diff(np.log(bars["close"].to_numpy()))
        >>> float(np.sum(pos[:-1] * r)) > 0
        True
    """
    close = bars["close"].to_numpy(dtype=np.float64)
    returns = np.concatenate(([0.0], np.diff(np.log(close))))
    return np.sign(signal_strength * returns).astype(np.int8)
