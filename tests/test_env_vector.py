"""Gymnasium API conformance; the vector env equals N single envs stepped one by one."""

from __future__ import annotations

import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from _market_fixtures import random_walk_market, small_config
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from fxai_tune.env import (
    EPISODE_INFO_KEY,
    EPISODE_KEYS,
    REWARD_COMPONENTS,
    CostConfig,
    RewardConfig,
    RewardWeights,
    TradingEnvironment,
    VectorTradingEnv,
)

# check_env warns about unbounded boxes (the portfolio's, the hand-made markets' features) and a
# missing spec; nothing else is expected.
_ALLOWED_WARNINGS = ("infinity", "not having a spec")


def _check_env_warnings(env: gym.Env) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    return [str(w.message) for w in caught
            if not any(s in str(w.message) for s in _ALLOWED_WARNINGS)]


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_single_env_passes_the_gymnasium_env_checker(mode):
    env = TradingEnvironment(random_walk_market(300),
                             config=small_config(mode=mode, episode_length=20,
                                                 position_sizes=[0.5, 1.0]))
    assert _check_env_warnings(env) == []


def test_vector_env_declares_same_step_autoreset_and_batched_spaces():
    env = VectorTradingEnv(random_walk_market(300), num_envs=3, config=small_config())
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.action_space.shape == (3,)
    assert env.observation_space["1h"].shape == (3, 4, 2)
    assert env.observation_space["portfolio"].shape == (3, 4)
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    obs, rewards, terminated, truncated, infos = env.step(env.action_space.sample())
    assert obs in env.observation_space
    assert rewards.shape == terminated.shape == truncated.shape == (3,)
    assert list(infos["reward_components"]) == list(REWARD_COMPONENTS)
    assert infos["_equity"].all()


@pytest.mark.parametrize(("copy_obs", "dsr_weight"), [(True, 0.0), (False, 0.7)])
def test_vector_env_equals_n_single_envs_stepped_one_by_one(copy_obs, dsr_weight):
    market = random_walk_market(400, seed=11)
    reward = RewardConfig(weights=RewardWeights(differential_sharpe=dsr_weight))
    config = small_config(mode="random", episode_length=15, position_sizes=[0.5, 2.0],
                          reward=reward)
    n, seed = 4, 123
    vec = VectorTradingEnv(market, num_envs=n, config=config, copy=copy_obs)
    singles = [TradingEnvironment(market, config=config) for _ in range(n)]
    v_obs, _ = vec.reset(seed=seed)
    s_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    actions = np.random.default_rng(0).integers(0, 5, (70, n))
    episodes = 0

    def assert_row(batched, i, single):
        for k in single:
            np.testing.assert_array_equal(batched[k][i], single[k], err_msg=k)

    for i in range(n):
        assert_row(v_obs, i, s_obs[i])
    for step_actions in actions:
        v_obs, v_rew, v_term, v_trunc, v_info = vec.step(step_actions)
        for i, env in enumerate(singles):
            obs, rew, term, trunc, info = env.step(step_actions[i])
            # the reward to the last ulp: numpy may sum the Sharpe terms in another order
            assert rew == pytest.approx(v_rew[i], rel=1e-12, abs=1e-12)
            assert (term, trunc) == (v_term[i], v_trunc[i])
            assert info["equity"] == v_info["equity"][i]
            for k in REWARD_COMPONENTS:
                assert info["reward_components"][k] == pytest.approx(
                    v_info["reward_components"][k][i], rel=1e-12, abs=1e-12), k
            if term or trunc:
                episodes += 1
                assert v_info["_final_obs"][i] and v_info[f"_{EPISODE_INFO_KEY}"][i]
                for k in obs:
                    np.testing.assert_array_equal(v_info["final_obs"][i][k], obs[k], err_msg=k)
                for k in EPISODE_KEYS:
                    assert info[EPISODE_INFO_KEY][k] == pytest.approx(
                        v_info[EPISODE_INFO_KEY][k][i], rel=1e-12, abs=1e-12), k
                obs, _ = env.reset()
            else:
                assert EPISODE_INFO_KEY not in info
                assert "_final_obs" not in v_info or not v_info["_final_obs"][i]
            assert_row(v_obs, i, obs)
    assert episodes >= 3 * n


def test_steps_return_new_arrays_and_validate_actions():
    env = VectorTradingEnv(random_walk_market(300), num_envs=2, config=small_config())
    obs0, _ = env.reset(seed=0)
    obs1, *_ = env.step(np.array([2, 0]))
    obs2, *_ = env.step(np.array([2, 0]))
    for k in obs0:
        assert not np.shares_memory(obs1[k], obs2[k])
        assert not np.shares_memory(obs0[k], obs1[k])
    for bad in ([3, 0], [-1, 0], [0, 0, 0]):
        with pytest.raises(ValueError, match="actions"):
            env.step(np.array(bad))


def test_copy_false_returns_the_same_buffers_every_step_with_the_copy_true_values():
    market = random_walk_market(400, seed=3)
    config = small_config(mode="random", episode_length=12, position_sizes=[0.5, 2.0])
    copied = VectorTradingEnv(market, num_envs=3, config=config)
    reused = VectorTradingEnv(market, num_envs=3, config=config, copy=False)
    assert copied.copy and not reused.copy
    expected, _ = copied.reset(seed=7)
    buffers, _ = reused.reset(seed=7)
    for k in expected:
        np.testing.assert_array_equal(buffers[k], expected[k])
    actions = np.random.default_rng(4).integers(0, 5, (60, 3))
    finals = []
    for a in actions:
        expected, e_rew, e_term, e_trunc, e_info = copied.step(a)
        obs, rew, term, trunc, info = reused.step(a)
        for k in expected:
            assert obs[k] is buffers[k], k  # the same arrays, rewritten in place
            np.testing.assert_array_equal(obs[k], expected[k], err_msg=k)
        np.testing.assert_array_equal(rew, e_rew)
        np.testing.assert_array_equal(term | trunc, e_term | e_trunc)
        if "final_obs" in info:
            for j in np.flatnonzero(info["_final_obs"]):
                for k, v in info["final_obs"][j].items():
                    assert not np.shares_memory(v, buffers[k])  # it outlives the step
                    np.testing.assert_array_equal(v, e_info["final_obs"][j][k], err_msg=k)
                finals.append((info["final_obs"][j], e_info["final_obs"][j]))
    assert len(finals) >= 5
    # final observations kept from earlier steps still hold their values
    for kept, ref in finals:
        for k in kept:
            np.testing.assert_array_equal(kept[k], ref[k])
    # deep copies get their own buffers
    twin = copy.deepcopy(reused)
    twin_obs, *_ = twin.step(actions[0])
    assert all(not np.shares_memory(twin_obs[k], buffers[k]) for k in buffers)
    with pytest.raises(TypeError, match="copy"):
        VectorTradingEnv(market, num_envs=3, config=config, copy=0)


def test_single_env_rejects_render_modes_and_steps_before_reset():
    market = random_walk_market(300)
    with pytest.raises(ValueError, match="render_mode"):
        TradingEnvironment(market, config=small_config(), render_mode="human")
    env = TradingEnvironment(market, config=small_config())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)


def test_info_components_are_reused_buffers_while_step_outputs_are_new_arrays():
    env = VectorTradingEnv(random_walk_market(300), num_envs=2, config=small_config())
    env.reset(seed=0)
    first = env.step(np.array([2, 0]))
    pnl = first[4]["reward_components"]["pnl"].copy()
    second = env.step(np.array([0, 2]))
    # reward_components: the same arrays every step, rewritten in place (documented).
    assert first[4]["reward_components"] is second[4]["reward_components"]
    assert not np.array_equal(first[4]["reward_components"]["pnl"], pnl)
    # rewards, flags, equity and positions are new arrays every step.
    for i in (1, 2, 3):
        assert not np.shares_memory(first[i], second[i])
    for key in ("equity", "position"):
        assert not np.shares_memory(first[4][key], second[4][key])


def test_deep_copied_and_unpickled_vector_envs_step_on_independently_and_identically():
    env = VectorTradingEnv(random_walk_market(400), num_envs=3,
                           config=small_config(episode_length=15, position_sizes=[0.5, 1.0]))
    env.reset(seed=4)
    actions = np.random.default_rng(2).integers(0, 5, (60, 3))
    for a in actions[:10]:
        env.step(a)
    copies = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]

    def roll(e):
        out = []
        for a in actions[10:]:
            obs, rew, term, trunc, infos = e.step(a)
            out.append([obs["1h"].copy(), obs["portfolio"].copy(), rew, term, trunc,
                        *(v.copy() for v in infos["reward_components"].values())])
        return out

    reference = roll(env)
    for other in copies:
        for x, y in zip(reference, roll(other), strict=True):
            for u, v in zip(x, y, strict=True):
                np.testing.assert_array_equal(u, v)
