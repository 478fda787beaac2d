"""`VectorTradingEnv`: N FX accounts stepped by one numpy call, same-step autoreset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from fxai_tune.data._market import MarketData
from fxai_tune.env._config import EnvConfig
from fxai_tune.env._engine import TradingEngine
from fxai_tune.env._single import EPISODE_INFO_KEY
from fxai_tune.env._spaces import observation_space

__all__ = ["VectorTradingEnv"]


class VectorTradingEnv(VectorEnv):
    """``num_envs`` independent `TradingEnvironment` accounts on one split, batched.

    Sub-env ``i`` of an env reset with ``seed=s`` draws from its own generator seeded ``s + i``,
    so it follows exactly the trajectory of a single `TradingEnvironment` reset with ``s + i``
    and given the same actions.

    Autoreset is ``SAME_STEP``, with gymnasium 1.x's info layout (as ``SyncVectorEnv`` builds
    it): when env ``i`` ends, row ``i`` of the returned observation is already its reset
    observation; ``infos["final_obs"]`` is an object array holding env ``i``'s final
    observation dict at ``i`` (None elsewhere), ``infos["final_info"]`` the info of the step
    that ended it (``reward_components``, ``equity``, ``position`` and the episode statistics
    under ``EPISODE_INFO_KEY``, batched, each with its ``_key`` mask), both valid where
    ``infos["_final_obs"]`` / ``infos["_final_info"]`` are True. The episode statistics are
    also at the top level, ``infos["trading_episode"]`` (valid where
    ``infos["_trading_episode"]``), so gymnasium's ``RecordEpisodeStatistics`` can add its own
    ``episode``. ``infos["reward_components"]``, ``infos["equity"]`` and ``infos["position"]``
    describe the step just taken, before any reset.

    ``np_random`` is the tuple of the sub-envs' generators (those that draw random episode
    starts), ``np_random_seed`` the tuple of their seeds (-1: set directly), as for
    ``SyncVectorEnv``.

    Buffer reuse: rewards, ``terminated``, ``truncated``, ``equity``, ``position``,
    ``trading_episode``, ``final_obs`` and ``final_info`` are new arrays every step; so are
    the observations with ``copy=True`` (the default). With ``copy=False``, as in gymnasium's
    ``SyncVectorEnv(copy=False)``, ``reset`` and ``step`` return the env's preallocated
    observation buffers (the same arrays every call, in a new dict), overwritten by the next
    ``step`` or ``reset``: read or copy them before stepping again. ``final_obs`` is new
    either way, since it outlives the step. The ``reward_components`` dict and its arrays
    are the same objects every step, rewritten in place by the next ``step`` (saves ~0.6 us a
    step): read or copy them before stepping again. The ``_reward_components`` / ``_equity`` /
    ``_position`` masks are one read-only all-True array.

    ``infos["reward_components"]["differential_sharpe"]`` is 0 when its weight is 0 (it is not
    computed, see `RewardSystem`).

    Args:
        market: Prices and features of the split.
        num_envs: Number of accounts.
        config: Environment configuration (default ``EnvConfig()``).
        copy: Return new observation arrays from every ``reset`` and ``step`` (default); if
            False, the env's buffers, overwritten by the next call. The PPO collector copies
            each observation into its rollout buffer before stepping again, so it trains with
            ``copy=False``.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": [],
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }

    def __init__(self, market: MarketData, *, num_envs: int = 8,
                 config: EnvConfig | None = None, copy: bool = True) -> None:
        if not isinstance(copy, bool):
            raise TypeError(f"copy must be True or False, got {copy=}")
        self.config = EnvConfig() if config is None else config
        self.copy = copy
        self.engine = TradingEngine(market, self.config, num_envs, copy_obs=copy)
        self.num_envs = num_envs
        self.single_observation_space = observation_space(self.engine.tables,
                                                          feature_bound=market.feature_bound)
        self.single_action_space = spaces.Discrete(self.config.n_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._all_true = np.ones(num_envs, dtype=bool)
        self._all_true.flags.writeable = False
        self._seeds: list[int | None] = [None] * num_envs

    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:
        """The sub-envs' generators (they draw the random episode starts), as
        ``SyncVectorEnv.np_random``."""
        return tuple(self.engine.rngs)

    @np_random.setter
    def np_random(self, generators: Sequence[np.random.Generator]) -> None:
        generators = list(generators)
        if len(generators) != self.num_envs or not all(
            isinstance(g, np.random.Generator) for g in generators
        ):
            raise ValueError(f"np_random takes {self.num_envs} generators (one per sub-env), "
                             f"got {generators!r}")
        self.engine.rngs[:] = generators
        self._seeds = [-1] * self.num_envs

    @property
    def np_random_seed(self) -> tuple[int | None, ...]:
        """Seed of each sub-env's generator: ``s + i`` after ``reset(seed=s)``, -1 once set
        directly, None before any seed."""
        return tuple(self._seeds)

    @property
    def difficulty(self) -> float:
        """Current difficulty level in [0, 1]."""
        return self.engine.difficulty

    def set_difficulty(self, level: float) -> None:
        """Ease (level < 1) or restore (1.0) every sub-env; see ``TradingEngine``."""
        self.engine.set_difficulty(level)

    def get_state(self) -> dict[str, Any]:
        """Deep copy of every account, episode, RNG and the difficulty."""
        return self.engine.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` snapshot; the envs then continue the same trajectories."""
        self.engine.set_state(state)

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """Reset every sub-env; ``seed=s`` seeds sub-env ``i`` with ``s + i`` (a list gives one
        seed per sub-env)."""
        if seed is not None:
            seeds = ([seed + i for i in range(self.num_envs)] if isinstance(seed, int)
                     else list(seed))
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed must be an int or {self.num_envs} seeds, got {seed=}")
            for i, s in enumerate(seeds):
                if s is not None:
                    self.engine.rngs[i] = np.random.default_rng(s)
                    self._seeds[i] = int(s)
        return self.engine.reset(), {}

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray,
                                                np.ndarray, dict[str, Any]]:
        """Step every sub-env with ``actions`` (``(num_envs,)`` ints); see the class docstring."""
        res = self.engine.step(actions, autoreset=True)
        infos: dict[str, Any] = {
            "reward_components": self.engine.component_views,
            "_reward_components": self._all_true,
            "equity": res.equity,
            "_equity": self._all_true,
            "position": res.position,
            "_position": self._all_true,
        }
        if res.episode is not None:
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[res.done] = True
            infos[EPISODE_INFO_KEY] = res.episode
            infos[f"_{EPISODE_INFO_KEY}"] = mask
            infos["final_obs"] = self._final_obs(res.final_obs, mask)
            infos["_final_obs"] = mask
            infos["final_info"] = self._final_info(infos, mask)
            infos["_final_info"] = mask
        return res.obs, res.reward, res.terminated, res.truncated, infos

    def _final_obs(self, final_obs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        """gymnasium's layout: an object array of one observation dict per ended env."""
        out = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(mask):
            out[i] = {k: v[i] for k, v in final_obs.items()}
        return out

    def _final_info(self, infos: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
        """The ended step's info of the ended envs, batched as ``SyncVectorEnv`` batches the
        sub-envs' infos: zeros and a False ``_key`` mask elsewhere."""

        def rows(values: np.ndarray) -> np.ndarray:
            return np.where(mask, values, 0)

        out: dict[str, Any] = {}
        for key in ("reward_components", EPISODE_INFO_KEY):
            nested: dict[str, Any] = {}
            for name, values in infos[key].items():
                nested[name], nested[f"_{name}"] = rows(values), mask.copy()
            out[key], out[f"_{key}"] = nested, mask.copy()
        for key in ("equity", "position"):
            out[key], out[f"_{key}"] = rows(infos[key]), mask.copy()
        return out
