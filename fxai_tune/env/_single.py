"""`TradingEnvironment`: one FX account as a `gymnasium.Env` (the batched engine with N=1)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from fxai_tune.data._market import MarketData
from fxai_tune.env._config import EnvConfig
from fxai_tune.env._engine import EPISODE_KEYS, TradingEngine
from fxai_tune.env._reward import REWARD_COMPONENTS
from fxai_tune.env._spaces import observation_space

__all__ = ["EPISODE_INFO_KEY", "TradingEnvironment"]

EPISODE_INFO_KEY = "trading_episode"
"""Info key of the episode statistics (`EPISODE_KEYS`) at the end of an episode. Not
``"episode"``: gymnasium's ``RecordEpisodeStatistics`` writes that key and refuses an env
that already does (issue 13)."""


class TradingEnvironment(gym.Env[dict[str, np.ndarray], np.int64]):
    """Trade one FX pair on one split with discrete target positions.

    A decision at base bar ``t`` sees only bars ``<= t`` (higher timeframes: completed bars
    only) and fills at ``open[t+1]``; equity is marked at the mid close of ``t+1``. Actions
    ``0..2k`` are the targets ``[-s_k..-s_1, 0, s_1..s_k] x lot_size`` units of
    ``EnvConfig.position_sizes``. A stop-out terminates the episode; the episode length or
    the split end truncate it.

    ``info`` of every step: ``reward_components`` (name -> raw value), ``equity``, ``position``
    (units); at the end of an episode also ``trading_episode`` (`EPISODE_INFO_KEY`) with reward,
    length, trades, wins, losses, total_return, sharpe (annualised with
    ``MarketData.periods_per_year``) and max_drawdown. Gymnasium's ``RecordEpisodeStatistics``
    may wrap the env: it adds its own ``episode`` (``r``, ``l``, ``t``).

    Args:
        market: Prices and features of the split.
        config: Environment configuration (default ``EnvConfig()``).
        render_mode: Unused; no render modes.

    Example:
        >>> env = TradingEnvironment(market, config=EnvConfig(mode="sequential"))  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
        >>> obs, reward, terminated, truncated, info = env.step(2)  # long 1 lot  # doctest: +SKIP
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, market: MarketData, *, config: EnvConfig | None = None,
                 render_mode: str | None = None) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (no render modes), got {render_mode=}")
        self.config = EnvConfig() if config is None else config
        self.engine = TradingEngine(market, self.config, 1)
        self.observation_space = observation_space(self.engine.tables,
                                                   feature_bound=market.feature_bound)
        self.action_space = spaces.Discrete(self.config.n_actions)
        self._needs_reset = True

    @property
    def difficulty(self) -> float:
        """Current difficulty level in [0, 1]."""
        return self.engine.difficulty

    def set_difficulty(self, level: float) -> None:
        """Ease (level < 1) or restore (1.0) the environment; see ``TradingEngine``."""
        self.engine.set_difficulty(level)

    def get_state(self) -> dict[str, Any]:
        """Deep copy of the account, episode, RNG and difficulty state."""
        state = self.engine.get_state()
        state["needs_reset"] = self._needs_reset
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` snapshot; the env then continues the same trajectory."""
        self.engine.rngs[0] = self.np_random
        self.engine.set_state(state)
        self._needs_reset = bool(state.get("needs_reset", False))

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """Start an episode; ``seed`` reseeds the RNG that draws random starts."""
        super().reset(seed=seed)
        self.engine.rngs[0] = self.np_random
        obs = self.engine.reset()
        self._needs_reset = False
        return {k: v[0] for k, v in obs.items()}, {}

    def step(self, action: int | np.integer) -> tuple[dict[str, np.ndarray], float, bool, bool,
                                                      dict[str, Any]]:
        """Move to the target position of ``action`` and advance one base bar."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode has ended or not begun)")
        res = self.engine.step(np.array([action], dtype=np.intp), autoreset=False)
        terminated, truncated = bool(res.terminated[0]), bool(res.truncated[0])
        info: dict[str, Any] = {
            "reward_components": {k: float(v) for k, v in
                                  zip(REWARD_COMPONENTS, res.components[:, 0], strict=True)},
            "equity": float(res.equity[0]),
            "position": float(res.position[0]),
        }
        if res.episode is not None:
            info[EPISODE_INFO_KEY] = {k: res.episode[k][0].item() for k in EPISODE_KEYS}
            self._needs_reset = True
        obs = {k: v[0] for k, v in res.obs.items()}
        return obs, float(res.reward[0]), terminated, truncated, info
