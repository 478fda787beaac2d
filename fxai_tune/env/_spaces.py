"""Observation and action spaces shared by the single and the vector environment."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from fxai_tune.env._tables import MarketTables

__all__ = ["PORTFOLIO_FEATURES", "observation_space"]

PORTFOLIO_FEATURES = ("position", "unrealised_pnl", "time_in_position", "drawdown")
"""Columns of the ``portfolio`` branch: position / max position, PnL of the open trade
(including its costs) / equity, steps in the position / ``EnvConfig.position_time_scale``,
drawdown of equity from its running peak (fraction)."""


def observation_space(tables: MarketTables, *, feature_bound: float = np.inf) -> spaces.Dict:
    """``Dict`` of one ``(window, n_features)`` float32 Box per timeframe plus ``portfolio``.

    The feature Boxes are ``[-feature_bound, feature_bound]`` (`MarketData.feature_bound`, the
    normaliser's clip for `DataManager` data); the portfolio Box bounds each column where it is
    bounded (position in [-1, 1], time in position >= 0, drawdown in [0, 1]).

    Raises:
        ValueError: When a feature lies outside ``feature_bound`` (the space would lie).
    """
    bound = float(feature_bound)
    if not bound > 0:
        raise ValueError(f"MarketData.feature_bound must be > 0, got {feature_bound=}")
    for tf, features in tables.features.items():
        worst = float(np.max(np.abs(features))) if features.size else 0.0
        if not worst <= bound:
            raise ValueError(
                f"MarketData.features[{tf!r}] holds {worst:g}, outside the declared "
                f"feature_bound={bound:g}; clip the features or raise the bound")
    branches: dict[str, spaces.Space] = {
        tf: spaces.Box(-bound, bound, shape=(w, tables.n_features[tf]), dtype=np.float32)
        for tf, w in zip(tables.timeframes, tables.window_lengths, strict=True)
    }
    branches["portfolio"] = spaces.Box(
        low=np.array([-1.0, -np.inf, 0.0, 0.0], dtype=np.float32),
        high=np.array([1.0, np.inf, np.inf, 1.0], dtype=np.float32),
        dtype=np.float32,
    )
    return spaces.Dict(branches, sort_keys=False)
