"""Building the vector environments a run trains and validates on."""

from __future__ import annotations

import dataclasses
import importlib

import gymnasium as gym
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from fxai_tune.data import DataManager
from fxai_tune.env import VectorTradingEnv
from fxai_tune.rl._config import TrainConfig

__all__ = ["SPLITS", "check_env_id", "make_data_manager", "make_vector_env"]

SPLITS = ("train", "val", "test")


def make_data_manager(config: TrainConfig) -> DataManager:
    """Load the market data once for every env of a run."""
    return DataManager(config.data, windows=config.env.windows)


def check_env_id(env_id: str) -> None:
    """Check that gymnasium can make ``env_id``, importing its module first.

    ``env_id`` is a registered id (``CartPole-v1``) or gymnasium's ``module:EnvId`` form for
    envs that a package registers when imported (``my_envs:Trading-v0``).

    Raises:
        ValueError: One line naming the id, the module to import and what is valid.
    """
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any import failure is the user's module
            raise ValueError(
                f"env_id={env_id!r}: cannot import module {module!r} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "valid: 'module:EnvId' with an importable module that registers EnvId"
            ) from None
    try:
        gym.spec(name)
    except gym.error.Error as error:
        hint = (
            f"{module!r} does not register it" if module
            else "if a package registers it on import, write env_id: 'package:" + name + "'"
        )
        raise ValueError(
            f"env_id={env_id!r} is not a registered gymnasium env ({error}); {hint}"
        ) from None


def make_vector_env(
    config: TrainConfig,
    split: str,
    *,
    num_envs: int,
    data: DataManager | None = None,
) -> gym.vector.VectorEnv:
    """A vector env with same-step autoreset for ``split`` of the configured market.

    Training envs start episodes at random windows of the train split; validation and test
    envs make deterministic full passes. With ``config.env_id`` set, a registered gymnasium
    env is used instead (its "splits" differ only by seed, chosen by the caller).

    The FX training env returns its observation buffers, overwritten by every step
    (``VectorTradingEnv(copy=False)``): `RLDataModule.collect_rollout` copies each observation
    into the rollout buffer before stepping again and clones the last one. Validation and test
    envs copy: `run_episodes` passes observations to any action function, which may keep
    them, and a full pass with a policy forward per step gains nothing measurable.

    Args:
        config: The run's configuration.
        split: "train", "val" or "test" ("test" only for the final report).
        num_envs: Number of parallel environments.
        data: Already loaded market data (FX env); loaded from ``config.data`` if None.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if config.env_id is not None:
        check_env_id(config.env_id)
        try:
            env = gym.make_vec(
                config.env_id,
                num_envs=num_envs,
                vectorization_mode="sync",
                # no deep copy of each batch: collection copies observations into the buffer
                vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP, "copy": False},
            )
        except gym.error.Error as error:
            raise ValueError(f"env_id={config.env_id!r} cannot be made: {error}") from None
        if not isinstance(env.single_action_space, gym.spaces.Discrete):
            raise ValueError(
                f"env_id={config.env_id!r} has action space {env.single_action_space}; "
                "only Discrete action spaces are supported"
            )
        return RecordEpisodeStatistics(env)
    data = data if data is not None else make_data_manager(config)
    market = data.test_market() if split == "test" else data.market(split)
    mode = "random" if split == "train" else "sequential"
    env_config = dataclasses.replace(config.env, mode=mode)
    return VectorTradingEnv(market, num_envs=num_envs, config=env_config, copy=split != "train")
