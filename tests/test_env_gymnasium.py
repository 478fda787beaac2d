"""Gymnasium 1.x conventions, checked with gymnasium's own wrappers (issue 13)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _market_fixtures import random_walk_market, small_config
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RecordEpisodeStatistics
from gymnasium.wrappers import vector as vector_wrappers

from fxai_tune.data import DataConfig, DataManager
from fxai_tune.env import EnvConfig, TradingEnvironment, VectorTradingEnv

EPISODE_INFO_KEY = "trading_episode"


def _config(**kwargs):
    return small_config(mode="random", episode_length=6, **kwargs)


def test_single_env_works_under_record_episode_statistics():
    env = RecordEpisodeStatistics(TradingEnvironment(random_walk_market(300), config=_config()))
    env.reset(seed=0)
    for _ in range(6):
        _, _, terminated, truncated, info = env.step(2)
    assert terminated or truncated
    assert info["episode"]["l"] == 6  # gymnasium's statistics
    assert info[EPISODE_INFO_KEY]["length"] == 6  # ours, beside them


# gymnasium's checker warns about infinite Box bounds (the portfolio's unrealised P&L and time in
# position are unbounded; the hand-made markets declare no feature clip) and that an env made
# without gymnasium.make has no spec to test render modes with; anything else is a finding.
_BENIGN_CHECKER_WARNINGS = ("infinity", "not having a spec")


def _check_env_strictly(env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    unexpected = [str(w.message) for w in caught
                  if not any(note in str(w.message) for note in _BENIGN_CHECKER_WARNINGS)]
    assert not unexpected, unexpected


def test_single_env_passes_gymnasium_s_env_checker(sample_env):
    _check_env_strictly(TradingEnvironment(random_walk_market(300), config=_config()))
    _, env = sample_env  # DataManager features: Boxes bounded by the normaliser's clip
    _check_env_strictly(env)


def test_vector_env_works_under_vector_record_episode_statistics():
    env = vector_wrappers.RecordEpisodeStatistics(
        VectorTradingEnv(random_walk_market(300), num_envs=3, config=_config()))
    env.reset(seed=0)
    for _ in range(6):
        _, _, terminated, truncated, infos = env.step(np.full(3, 2))
    assert (terminated | truncated).all()
    assert infos["_episode"].all() and infos["episode"]["l"].tolist() == [6, 6, 6]
    assert infos[f"_{EPISODE_INFO_KEY}"].all()
    assert infos[EPISODE_INFO_KEY]["length"].tolist() == [6, 6, 6]


def test_vector_env_final_obs_and_final_info_match_sync_vector_env():
    """Same-step autoreset: ``final_obs`` (one observation object per env) and ``final_info``
    (the ended step's info, batched with masks) as gymnasium's ``SyncVectorEnv`` gives them."""
    market, config, n = random_walk_market(300, seed=3), _config(), 3
    vec = VectorTradingEnv(market, num_envs=n, config=config)
    sync = SyncVectorEnv([lambda: TradingEnvironment(market, config=config)] * n,
                         autoreset_mode=AutoresetMode.SAME_STEP)
    vec.reset(seed=5)
    sync.reset(seed=5)
    actions = np.random.default_rng(0).integers(0, 3, (13, n))
    ended = 0
    for a in actions:
        _, _, v_term, v_trunc, v_info = vec.step(a)
        _, _, s_term, s_trunc, s_info = sync.step(a)
        np.testing.assert_array_equal(v_term | v_trunc, s_term | s_trunc)
        if "final_info" not in s_info:
            assert "final_info" not in v_info and "final_obs" not in v_info
            continue
        ended += 1
        np.testing.assert_array_equal(v_info["_final_info"], s_info["_final_info"])
        np.testing.assert_array_equal(v_info["_final_obs"], s_info["_final_obs"])
        assert v_info["final_obs"].dtype == object
        for i in np.flatnonzero(s_info["_final_obs"]):
            for k, v in s_info["final_obs"][i].items():
                np.testing.assert_array_equal(v_info["final_obs"][i][k], v, err_msg=k)
        v_final, s_final = v_info["final_info"], s_info["final_info"]
        assert set(v_final) == set(s_final)
        rows = s_info["_final_info"]
        for key in ("equity", "position"):
            np.testing.assert_allclose(v_final[key][rows], s_final[key][rows], rtol=1e-12)
        for key, values in s_final[EPISODE_INFO_KEY].items():
            if not key.startswith("_"):
                np.testing.assert_allclose(v_final[EPISODE_INFO_KEY][key][rows], values[rows],
                                           rtol=1e-12, atol=1e-12, err_msg=key)
        for key, values in s_final["reward_components"].items():
            if not key.startswith("_"):
                np.testing.assert_allclose(v_final["reward_components"][key][rows],
                                           values[rows], rtol=1e-12, atol=1e-12, err_msg=key)
    assert ended >= 2


def test_vector_info_wrappers_read_final_obs_and_final_info_per_env():
    """``DictInfoToList`` splits the batched info per env; ``NormalizeReward`` accepts the
    same-step autoreset."""
    env = vector_wrappers.DictInfoToList(vector_wrappers.NormalizeReward(
        VectorTradingEnv(random_walk_market(300), num_envs=2, config=_config())))
    env.reset(seed=0)
    for _ in range(6):
        obs, _, _, _, infos = env.step(np.array([2, 0]))
    single = env.unwrapped.single_observation_space
    for i in range(2):
        assert infos[i]["final_obs"] in single
        assert infos[i]["final_info"][EPISODE_INFO_KEY]["length"] == 6
        assert infos[i]["final_info"]["position"] == infos[i]["position"]


def test_vector_env_np_random_is_the_generators_of_the_sub_envs():
    market, config = random_walk_market(300), _config()
    vec = VectorTradingEnv(market, num_envs=3, config=config)
    vec.reset(seed=7)
    assert vec.np_random_seed == (7, 8, 9)
    assert all(g is r for g, r in zip(vec.np_random, vec.engine.rngs, strict=True))
    sync = SyncVectorEnv([lambda: TradingEnvironment(market, config=config)] * 3,
                         autoreset_mode=AutoresetMode.SAME_STEP)
    sync.reset(seed=7)
    assert sync.np_random_seed == vec.np_random_seed
    for ours, theirs in zip(vec.np_random, sync.np_random, strict=True):
        assert ours.bit_generator.state == theirs.bit_generator.state
    # the generators set are those that draw the random starts from then on
    vec.np_random = [np.random.default_rng(100 + i) for i in range(3)]
    assert vec.np_random_seed == (-1, -1, -1)
    again = VectorTradingEnv(market, num_envs=3, config=config)
    obs, _ = vec.reset()
    expected, _ = again.reset(seed=100)
    for k, v in expected.items():
        np.testing.assert_array_equal(obs[k], v, err_msg=k)
    with pytest.raises(ValueError, match="3 generators"):
        vec.np_random = [np.random.default_rng(0)]


@pytest.fixture(scope="module")
def sample_env():
    windows = {"1h": 8, "4h": 4}
    dm = DataManager(DataConfig(), windows=windows)
    return dm, TradingEnvironment(dm.market("train"),
                                  config=EnvConfig(windows=windows, episode_length=32))


def test_feature_boxes_declare_the_normaliser_clip(sample_env):
    dm, env = sample_env
    clip = dm.config.clip
    for tf in ("1h", "4h"):
        box = env.observation_space[tf]
        assert np.all(box.low == -clip) and np.all(box.high == clip)
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space


def test_features_outside_the_declared_bound_are_refused():
    import dataclasses

    market = random_walk_market(300)
    bad = dataclasses.replace(market, feature_bound=0.5)
    with pytest.raises(ValueError, match="feature_bound"):
        TradingEnvironment(bad, config=_config())
