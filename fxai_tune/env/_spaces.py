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


def observation_space(tables: MarketTables) -> spaces.Dict:
    """``Dict`` of one ``(window, n_features)`` float32 Box per timeframe plus ``portfolio``."""
    branches: dict[str, spaces.Space] = {
        tf: spaces.Box(-np.inf, np.inf, shape=(w, tables.n_features[tf]), dtype=np.float32)
        for tf, w in zip(tables.timeframes, tables.window_lengths, strict=True)
    }
    branches["portfolio"] = spaces.Box(
        low=np.array([-1.0, -np.inf, 0.0, 0.0], dtype=np.float32),
        high=np.array([1.0, np.inf, np.inf, 1.0], dtype=np.float32),
        dtype=np.float32,
    )
    return spaces.Dict(branches, sort_keys=False)
