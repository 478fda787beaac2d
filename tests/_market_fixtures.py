"""Hand-made `MarketData` objects for the environment tests (no data layer needed).

Base timeframe ``"1h"`` has features ``[bar index, close]``; a ``"2h"`` timeframe groups base
bars ``(2j, 2j+1)`` and is complete at the close of ``2j+1``, so at base bar ``t`` its last
complete bar is ``(t + 1) // 2 - 1``; its features are ``[2h bar index, close of its last
base bar]``.
"""

from __future__ import annotations

import numpy as np

from fxai_tune.data._market import MarketData
from fxai_tune.env import CostConfig, CurriculumEnvConfig, EnvConfig, RewardConfig

SMALL_WINDOWS = {"1h": 4, "2h": 2}
"""Observation windows for the tiny markets; the first decision bar with full windows is 3."""
FIRST_BAR = 3

# The hand-checked tiny series (ASK prices) of test_env_accounting and test_env_episodes.
TINY_OPEN = [1.1000, 1.1005, 1.1012, 1.1022, 1.1010, 1.1035, 1.1045, 1.1038, 1.1065, 1.1075]
TINY_CLOSE = [1.1000, 1.1010, 1.1020, 1.1015, 1.1030, 1.1050, 1.1040, 1.1060, 1.1070, 1.1080]
SHORT, FLAT, LONG = 0, 1, 2
"""Actions with the default ``position_sizes=[1.0]``."""


def make_market(
    close: np.ndarray | list[float],
    *,
    open_: np.ndarray | list[float] | None = None,
    high: np.ndarray | list[float] | None = None,
    low: np.ndarray | list[float] | None = None,
    spread: np.ndarray | list[float] | None = None,
    price_side: str = "ask",
    start: int = 0,
    end: int | None = None,
    first_hour: int = 0,
    pip_size: float = 1e-4,
    periods_per_year: float = 6240.0,
    volatility: np.ndarray | None = None,
    name: str = "tiny",
    symbol: str | None = "EURUSD",
    conversion: np.ndarray | list[float] | None = None,
    conversion_symbol: str | None = None,
) -> MarketData:
    """A market over ``close`` (and ``open_``, default: the previous close; ``high`` / ``low``,
    default: the larger / smaller of open and close) with a 2h branch."""
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    if open_ is None:
        open_ = np.concatenate([close[:1], close[:-1]])
    open_ = np.asarray(open_, dtype=np.float64)
    high = np.maximum(open_, close) if high is None else np.asarray(high, dtype=np.float64)
    low = np.minimum(open_, close) if low is None else np.asarray(low, dtype=np.float64)
    idx = np.arange(n)
    base = np.stack([idx, close], axis=1).astype(np.float32)
    n2 = n // 2
    two = np.stack([np.arange(n2), close[1:2 * n2:2]], axis=1).astype(np.float32)
    lc2 = np.minimum((idx + 1) // 2 - 1, n2 - 1).astype(np.int64)
    timestamps = (np.datetime64("2017-01-02T00:00", "ns")
                  + (idx + first_hour) * np.timedelta64(1, "h"))
    return MarketData(
        name=name,
        timestamps=timestamps,
        open=open_,
        high=high,
        low=low,
        close=close,
        price_side=price_side,
        spread=None if spread is None else np.asarray(spread, dtype=np.float64),
        hour_of_day=((idx + first_hour) % 24).astype(np.int8),
        features={"1h": base, "2h": two},
        last_complete={"1h": idx.astype(np.int64), "2h": lc2},
        feature_names=("index", "close"),
        base_timeframe="1h",
        start=start,
        end=n if end is None else end,
        pip_size=pip_size,
        periods_per_year=periods_per_year,
        volatility=np.zeros(0) if volatility is None else np.asarray(volatility, np.float64),
        symbol=symbol,
        conversion=None if conversion is None else np.asarray(conversion, dtype=np.float64),
        conversion_symbol=conversion_symbol,
    )


def random_walk_market(n: int = 2000, *, seed: int = 0, sigma: float = 5e-4,
                       drift: float = 0.0, **kwargs) -> MarketData:
    """A geometric random walk around 1.1 with a causal rolling volatility."""
    rng = np.random.default_rng(seed)
    logret = drift + sigma * rng.standard_normal(n)
    close = 1.1 * np.exp(np.cumsum(logret))
    vol = np.sqrt(np.convolve(logret**2, np.ones(24) / 24.0)[:n])
    return make_market(close, volatility=vol, **kwargs)


def zero_cost() -> CostConfig:
    """Costs switched off."""
    return CostConfig(spread=0.0, slippage=0.0, commission_per_lot=0.0)


def small_config(*, cost: CostConfig | None = None, reward: RewardConfig | None = None,
                 **kwargs) -> EnvConfig:
    """`EnvConfig` for the tiny markets (sequential, zero costs unless given)."""
    kwargs.setdefault("mode", "sequential")
    kwargs.setdefault("curriculum", CurriculumEnvConfig(min_episode_length=1))
    kwargs.setdefault("windows", dict(SMALL_WINDOWS))
    return EnvConfig(cost=cost or zero_cost(),
                     reward=reward or RewardConfig(), **kwargs)
