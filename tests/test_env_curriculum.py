"""Curriculum hooks (`set_difficulty`) and the exact state round trip (`get_state`/`set_state`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _market_fixtures import FIRST_BAR, random_walk_market, small_config

from fxai_tune.env import (
    CostConfig,
    CurriculumEnvConfig,
    EnvConfig,
    RewardConfig,
    RewardWeights,
    TradingEnvironment,
    VectorTradingEnv,
)

CURRICULUM = CurriculumEnvConfig(min_cost_scale=0.25, min_episode_length=10,
                                 min_volatility_quantile=0.3)


def _config(**kwargs) -> EnvConfig:
    kwargs.setdefault("cost", CostConfig(spread=1.0, slippage=0.0, rollover_multiplier=1.0))
    return small_config(mode="random", episode_length=50, curriculum=CURRICULUM, **kwargs)


def _first_cost(env: TradingEnvironment) -> float:
    """Costs in USD of opening one lot, from the log components of the first step."""
    env.reset(seed=0)
    _, _, _, _, info = env.step(2)
    comps = info["reward_components"]
    return 100_000.0 * np.exp(comps["pnl"]) * -np.expm1(comps["transaction_cost"])


def test_lower_difficulty_scales_costs_down_to_min_cost_scale():
    env = TradingEnvironment(random_walk_market(500), config=_config())
    full = _first_cost(env)
    env.set_difficulty(0.0)
    easy = _first_cost(env)
    env.set_difficulty(0.5)
    half = _first_cost(env)
    # Half of a 1-pip spread on 100,000 units is 5 USD at difficulty 1.
    assert full == pytest.approx(5.0, rel=1e-9)
    assert easy == pytest.approx(0.25 * 5.0, rel=1e-9)
    assert half == pytest.approx(0.625 * 5.0, rel=1e-9)


def test_lower_difficulty_shortens_random_episodes_to_min_episode_length():
    env = VectorTradingEnv(random_walk_market(500), num_envs=2, config=_config())
    lengths = {}
    for level in (1.0, 0.5, 0.0):
        env.set_difficulty(level)
        env.reset(seed=0)
        for _ in range(60):
            _, _, _, truncated, infos = env.step(np.array([1, 2]))
            if truncated.any():
                lengths[level] = set(infos["trading_episode"]["length"][infos["_trading_episode"]].tolist())
                break
    assert lengths == {1.0: {50}, 0.5: {30}, 0.0: {10}}


def test_lower_difficulty_starts_episodes_in_calmer_periods():
    market = random_walk_market(3000, seed=4)
    # Calm and volatile regimes of 200-bar stretches.
    vol = market.volatility * (1.0 + 5.0 * (np.sin(np.arange(3000) / 200.0) > 0))
    market = dataclasses.replace(market, volatility=vol)
    env = TradingEnvironment(market, config=_config())

    def start_vols(level: float) -> np.ndarray:
        env.set_difficulty(level)
        starts = [int(env.reset(seed=s)[0]["1h"][-1, 0]) for s in range(200)]
        return vol[starts]

    candidates = vol[FIRST_BAR:3000 - 1 - 10 + 1]
    easy = start_vols(0.0)
    assert easy.max() <= np.quantile(candidates, 0.3)
    assert easy.mean() < start_vols(0.5).mean() < start_vols(1.0).mean()


def test_difficulty_one_is_the_configured_environment():
    market = random_walk_market(500)
    a = VectorTradingEnv(market, num_envs=3, config=_config())
    b = VectorTradingEnv(market, num_envs=3, config=_config())
    b.set_difficulty(0.2)
    b.set_difficulty(1.0)
    a.reset(seed=3)
    b.reset(seed=3)
    for actions in np.random.default_rng(0).integers(0, 3, (120, 3)):
        ra, rb = a.step(actions), b.step(actions)
        np.testing.assert_array_equal(ra[1], rb[1])
        np.testing.assert_array_equal(ra[0]["1h"], rb[0]["1h"])


@pytest.mark.parametrize("level", [-0.1, 1.5, float("nan")])
def test_difficulty_outside_zero_one_is_rejected(level):
    env = TradingEnvironment(random_walk_market(300), config=_config())
    with pytest.raises(ValueError, match="difficulty"):
        env.set_difficulty(level)


@pytest.mark.parametrize(("copy_obs", "dsr_weight"), [(True, 0.0), (False, 0.5)])
def test_vector_state_round_trip_continues_the_identical_trajectory(copy_obs, dsr_weight):
    # with a weighted differential Sharpe ratio its moving moments are part of the state
    reward = RewardConfig(weights=RewardWeights(differential_sharpe=dsr_weight))
    env = VectorTradingEnv(random_walk_market(600), num_envs=3, copy=copy_obs,
                           config=_config(position_sizes=[1.0, 2.0], reward=reward))
    env.set_difficulty(0.7)
    env.reset(seed=5)
    actions = np.random.default_rng(1).integers(0, 5, (200, 3))
    for a in actions[:37]:
        env.step(a)
    state = env.get_state()

    def continue_(n: int) -> list:
        out = []
        for a in actions[37:37 + n]:
            obs, rew, term, trunc, infos = env.step(a)
            out.append((obs["1h"].copy(), obs["portfolio"].copy(), rew, term, trunc,
                        infos.get("_episode")))
        return out

    first = continue_(150)  # crosses several autoresets, so the RNGs matter
    env.set_difficulty(1.0)  # restored by set_state
    env.reset(seed=99)
    env.set_state(state)
    second = continue_(150)
    for x, y in zip(first, second, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)
    assert env.difficulty == 0.7
    # The snapshot is a deep copy: stepping did not change it.
    assert state["rngs"] != env.get_state()["rngs"]


def test_single_env_state_round_trip_includes_its_rng():
    env = TradingEnvironment(random_walk_market(600), config=_config())
    env.reset(seed=2)
    for _ in range(20):
        env.step(2)
    state = env.get_state()

    def continue_() -> list:
        out = []
        for i in range(200):
            obs, r, term, trunc, _ = env.step(i % 3)
            out.append((obs["1h"][-1, 0], r))
            if term or trunc:
                obs, _ = env.reset()  # draws from the restored RNG
                out.append(obs["1h"][-1, 0])
        return out

    first = continue_()
    env.reset(seed=77)
    env.set_state(state)
    assert continue_() == first


def test_a_state_saved_before_the_refusal_counter_loads_with_zero_refusals():
    env = VectorTradingEnv(random_walk_market(600), num_envs=2, config=_config())
    env.reset(seed=3)
    for _ in range(5):
        env.step(np.array([2, 0]))
    state = env.get_state()
    del state["account"]["refused"]  # as an engine without the counter saved it
    env.engine.state.refused[:] = 7.0
    env.set_state(state)
    np.testing.assert_array_equal(env.engine.state.refused, [0.0, 0.0])
    del state["account"]["equity"]  # any other missing field is still refused
    with pytest.raises(ValueError, match=r"state lacks \['equity'\]"):
        env.set_state(state)
