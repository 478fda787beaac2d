"""The environment on the shipped EUR/USD sample served by `DataManager`."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from fxai_tune.data import DataConfig, DataManager
from fxai_tune.env import EnvConfig, TradingEnvironment, VectorTradingEnv, _tables

WINDOWS = {"1h": 64, "4h": 32, "1d": 8}


@pytest.fixture(scope="module")
def data() -> DataManager:
    return DataManager(DataConfig(), windows=WINDOWS)


def test_env_on_the_training_split_passes_the_env_checker(data):
    env = TradingEnvironment(data.market("train"), config=EnvConfig())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    unexpected = [str(w.message) for w in caught
                  if "infinity" not in str(w.message) and "spec" not in str(w.message)]
    assert unexpected == []
    obs, _ = env.reset(seed=0)
    assert {k: v.shape for k, v in obs.items()} == {
        "1h": (64, 8), "4h": (32, 8), "1d": (8, 8), "portfolio": (4,)}


def test_vector_env_runs_random_training_episodes(data):
    market = data.market("train")
    env = VectorTradingEnv(market, num_envs=8, config=EnvConfig(episode_length=100))
    obs, _ = env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 3, (250, 8))
    ended = 0
    for a in actions:
        obs, rewards, _, _, infos = env.step(a)
        assert np.isfinite(rewards).all()
        assert all(np.isfinite(v).all() for v in obs.values())
        if "trading_episode" in infos:
            ended += int(infos["_trading_episode"].sum())
            lengths = infos["trading_episode"]["length"][infos["_trading_episode"]]
            assert (lengths == 100).all()
    assert ended == 16
    assert ((env.engine.t >= market.start) & (env.engine.t < market.end)).all()


@pytest.mark.parametrize("split", ["val", "test"])
def test_sequential_pass_covers_the_whole_evaluation_split(data, split):
    market = data.market("val") if split == "val" else data.test_market()
    env = TradingEnvironment(market, config=EnvConfig(mode="sequential"))
    env.reset(seed=0)
    assert env.engine.t[0] == market.start
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(1)
        steps += 1
        done = terminated or truncated
    assert truncated and info["trading_episode"]["length"] == market.n_decisions == steps
    assert info["trading_episode"]["total_return"] == 0.0  # flat all along


@pytest.mark.parametrize("fallback", ["per_timeframe", "row_gather"])
@pytest.mark.parametrize("copy_obs", [True, False])
def test_window_fallbacks_give_the_same_windows(data, monkeypatch, fallback, copy_obs):
    market = data.market("train")
    config = EnvConfig(episode_length=12)  # crosses autoresets
    fast = VectorTradingEnv(market, num_envs=4, config=config)
    table = fast.engine.tables.window_rows
    assert table is not None
    # Too long for the window table; the per-timeframe windows still fit, or nothing does.
    limit = table.nbytes - 1 if fallback == "per_timeframe" else 0
    monkeypatch.setattr(_tables, "MAX_WINDOW_CACHE_BYTES", limit)
    slow = VectorTradingEnv(market, num_envs=4, config=config, copy=copy_obs)
    tables = slow.engine.tables
    assert tables.window_rows is None
    assert all((win is None) == (fallback == "row_gather") for win in tables.windows.values())
    a, _ = fast.reset(seed=1)
    b, _ = slow.reset(seed=1)
    ends = 0
    for actions in np.random.default_rng(1).integers(0, 3, (30, 4)):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        a, *_, a_info = fast.step(actions)
        b, *_, b_info = slow.step(actions)
        if "final_obs" in a_info:
            ends += 1
            np.testing.assert_array_equal(a_info["_final_obs"], b_info["_final_obs"])
            for i in np.flatnonzero(a_info["_final_obs"]):
                for k, v in a_info["final_obs"][i].items():
                    np.testing.assert_array_equal(v, b_info["final_obs"][i][k])
    assert ends >= 2


@pytest.mark.parametrize("num_envs", [1, 3, 8])
def test_sequential_windows_of_a_vector_env_tile_the_split_once(data, num_envs):
    """Batched validation: env i runs the i-th contiguous window; together they cover every
    decision bar of the split exactly once."""
    market = data.market("val")
    env = VectorTradingEnv(market, num_envs=num_envs, config=EnvConfig(mode="sequential"))
    env.reset(seed=0)
    visited = [[] for _ in range(num_envs)]
    lengths = np.zeros(num_envs, dtype=np.int64)
    flat = np.full(num_envs, 1)
    while not lengths.all():
        t_before = env.engine.t.copy()
        _, _, _, _, info = env.step(flat)
        for i in np.flatnonzero(lengths == 0):
            visited[i].append(int(t_before[i]))
        if "trading_episode" in info:
            ended = info["_trading_episode"] & (lengths == 0)
            lengths[ended] = info["trading_episode"]["length"][ended]
    bars = [t for window in visited for t in window]
    assert bars == list(range(market.start, market.start + market.n_decisions))
    assert [len(w) for w in visited] == lengths.tolist()
    assert lengths.max() - lengths.min() <= 1
