"""Vectorised FX trading environment (numpy + gymnasium only; no torch, no pandas).

Public names:

- `TradingEnvironment`: one account as a `gymnasium.Env` (passes ``check_env``).
- `VectorTradingEnv`: N accounts stepped by one numpy call (`gymnasium.vector.VectorEnv`,
  same-step autoreset).
- `EnvConfig`, `CostConfig`, `FinancingConfig`, `RewardConfig`, `RewardWeights`,
  `CurriculumEnvConfig`: typed configuration.
- `RewardSystem`, `REWARD_COMPONENTS`, `differential_sharpe`: the reward components.
- `TradingEngine`: the batched numpy core both envs wrap; `EPISODE_KEYS` and
  `PORTFOLIO_FEATURES` name the episode statistics and the portfolio branch's columns;
  `EPISODE_INFO_KEY` is the info key of the episode statistics (``"trading_episode"``).
"""

from __future__ import annotations

from fxai_tune.env._config import (
    CostConfig,
    CurriculumEnvConfig,
    EnvConfig,
    FinancingConfig,
    RewardConfig,
    RewardWeights,
)
from fxai_tune.env._engine import EPISODE_KEYS, TradingEngine
from fxai_tune.env._reward import REWARD_COMPONENTS, RewardSystem, differential_sharpe
from fxai_tune.env._single import EPISODE_INFO_KEY, TradingEnvironment
from fxai_tune.env._spaces import PORTFOLIO_FEATURES
from fxai_tune.env._vector import VectorTradingEnv

__all__ = [
    "EPISODE_INFO_KEY",
    "EPISODE_KEYS",
    "PORTFOLIO_FEATURES",
    "REWARD_COMPONENTS",
    "CostConfig",
    "CurriculumEnvConfig",
    "EnvConfig",
    "FinancingConfig",
    "RewardConfig",
    "RewardWeights",
    "RewardSystem",
    "TradingEngine",
    "TradingEnvironment",
    "VectorTradingEnv",
    "differential_sharpe",
]
