"""Episode boundaries (random / sequential, truncation vs margin-call termination) and the
episode statistics, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _market_fixtures import (
    FIRST_BAR,
    FLAT,
    LONG,
    SHORT,
    make_market,
    random_walk_market,
    small_config,
)
from _market_fixtures import TINY_CLOSE as CLOSE
from _market_fixtures import TINY_OPEN as OPEN

from fxai_tune.env import EPISODE_KEYS, CostConfig, TradingEnvironment, VectorTradingEnv


def test_episode_statistics_match_a_hand_computation():
    cost = CostConfig(spread=0.8, slippage=0.1)  # 5 USD per lot and side
    env = TradingEnvironment(make_market(CLOSE, open_=OPEN), config=small_config(cost=cost))
    env.reset(seed=0)
    rewards, infos = [], []
    for a in [LONG, LONG, FLAT, SHORT, LONG, FLAT]:
        _, r, terminated, truncated, info = env.step(a)
        rewards.append(r)
        infos.append(info)
    assert truncated and not terminated
    # Equity by hand (see test_env_accounting's table):
    #  t=3 open long: +200 - 5; t=4 hold: +50 gap +150 bar; t=5 close: -50 gap - 5 (trade +340)
    #  t=6 open short: -220 - 5; t=7 flip: -50 gap -10 (short trade -280), long +50 bar
    #  t=8 close: +50 gap - 5 (long trade -5 + 50 + 50 - 5 = +90)
    equity = [100_000.0, 100_195.0, 100_395.0, 100_340.0, 100_115.0, 100_105.0, 100_150.0]
    np.testing.assert_allclose([i["equity"] for i in infos], equity[1:], atol=1e-6)
    ep = infos[-1]["trading_episode"]
    assert set(ep) == set(EPISODE_KEYS)
    assert ep["length"] == 6
    assert ep["trades"] == 5
    assert (ep["wins"], ep["losses"]) == (2, 1)
    assert ep["total_return"] == pytest.approx(150.0 / 100_000.0, abs=1e-12)
    assert ep["max_drawdown"] == pytest.approx((100_395.0 - 100_105.0) / 100_395.0, abs=1e-12)
    assert ep["reward"] == pytest.approx(sum(rewards), abs=1e-12)
    log_r = np.diff(np.log(equity))
    sharpe = log_r.mean() / log_r.std(ddof=1) * math.sqrt(6240.0)
    assert ep["sharpe"] == pytest.approx(sharpe, rel=1e-6)
    assert "trading_episode" not in infos[0]


def test_a_stop_out_terminates_and_does_not_truncate():
    close = [1.1, 1.1, 1.1, 1.1, 1.04, 1.04, 1.04, 1.04]
    env = TradingEnvironment(make_market(close), config=small_config(position_sizes=[20.0]))
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(2)  # long 20 lots into a 600-pip fall
    assert terminated and not truncated
    # Closed at the stop-out level: 50% of the used margin 2,000,000 x 1.1 / 30.
    stop_equity = 0.5 * 2_000_000 * 1.1 / 30.0
    assert info["equity"] == pytest.approx(stop_equity, rel=1e-12)
    assert info["trading_episode"]["length"] == 1
    assert info["trading_episode"]["max_drawdown"] == pytest.approx(
        1.0 - stop_equity / 100_000.0, abs=1e-12)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)


def test_a_stop_out_in_a_vector_env_autoresets_only_that_env():
    close = [1.1, 1.1, 1.1, 1.1, 1.04, 1.04, 1.04, 1.04]
    env = VectorTradingEnv(make_market(close), num_envs=2,
                           config=small_config(position_sizes=[20.0]))
    obs, _ = env.reset(seed=0)
    obs, _, terminated, truncated, infos = env.step(np.array([2, 1]))
    assert terminated.tolist() == [True, False] and truncated.tolist() == [False, False]
    assert infos["_trading_episode"].tolist() == [True, False]
    assert infos["_final_obs"].tolist() == [True, False]
    assert infos["final_obs"][1] is None
    assert infos["final_obs"][0]["portfolio"][0] == 0.0  # final obs: stopped out, flat
    assert obs["portfolio"][0].tolist() == [0.0, 0.0, 0.0, 0.0]  # reset obs
    assert obs["1h"][0, -1, 0] == FIRST_BAR
    assert env.engine.equity.tolist() == [100_000.0, 100_000.0]


def test_sequential_mode_is_one_deterministic_full_pass_of_the_split():
    market = random_walk_market(300, start=40, end=250)
    env = TradingEnvironment(market, config=small_config(mode="sequential"))
    actions = np.random.default_rng(1).integers(0, 3, 1000)
    runs = []
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        trajectory = [obs["1h"][-1, 0]]
        for a in actions:
            obs, r, terminated, truncated, info = env.step(a)
            trajectory.append((obs["1h"][-1, 0], r))
            if terminated or truncated:
                break
        assert truncated and not terminated
        assert info["trading_episode"]["length"] == 250 - 1 - 40
        runs.append(trajectory)
    assert runs[0] == runs[1]
    assert runs[0][0] == 40 and runs[0][-1][0] == 249


def test_random_mode_truncates_after_episode_length_at_random_starts():
    market = random_walk_market(400)
    config = small_config(mode="random", episode_length=25)
    env = TradingEnvironment(market, config=config)
    starts = set()
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        start = int(obs["1h"][-1, 0])
        assert FIRST_BAR <= start <= 399 - 25
        starts.add(start)
        for step in range(1, 26):
            obs, _, terminated, truncated, info = env.step(step % 3)
            assert terminated is False
            assert truncated is (step == 25)
        assert info["trading_episode"]["length"] == 25
        assert int(obs["1h"][-1, 0]) == start + 25
    assert len(starts) > 1


def test_episodes_are_cut_at_the_split_end():
    market = random_walk_market(40)
    config = small_config(mode="random", episode_length=1000,
                          curriculum={"min_episode_length": 1})
    env = TradingEnvironment(market, config=config)
    obs, _ = env.reset(seed=0)
    assert int(obs["1h"][-1, 0]) == FIRST_BAR  # the only start that fits is the first
    length = 0
    while True:
        _, _, terminated, truncated, _ = env.step(1)
        length += 1
        if terminated or truncated:
            break
    assert truncated and length == 39 - FIRST_BAR


def test_same_seed_gives_the_same_trajectory_and_another_seed_another_one():
    market = random_walk_market(500)
    config = small_config(mode="random", episode_length=30)
    actions = np.random.default_rng(0).integers(0, 3, (100, 3))

    def rollout(seed):
        env = VectorTradingEnv(market, num_envs=3, config=config)
        obs, _ = env.reset(seed=seed)
        out = [obs["1h"].copy()]
        for a in actions:
            obs, r, *_ = env.step(a)
            out += [obs["1h"].copy(), r]
        return out

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("cost_pips, expect_eaten", [(0.8, True), (0.0, False)])
def test_flipping_every_bar_is_eaten_by_costs_but_not_without_them(cost_pips, expect_eaten):
    market = random_walk_market(1500, seed=3)
    config = small_config(cost=CostConfig(spread=cost_pips, slippage=0.1 if cost_pips else 0.0))
    env = TradingEnvironment(market, config=config)
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, terminated, truncated, info = env.step(2 if steps % 2 == 0 else 0)
        steps += 1
        if terminated or truncated:
            break
    ep = info["trading_episode"]
    assert ep["trades"] == steps
    if expect_eaten:
        # 2 lots traded per flip at 0.5 pip per unit and side: 10 USD a bar.
        assert ep["total_return"] < -0.1
    else:
        assert abs(ep["total_return"]) < 0.05


def test_costs_explain_the_whole_gap_between_costly_and_free_flipping():
    market = random_walk_market(1500, seed=3)
    finals = []
    for spread, slip in ((0.8, 0.1), (0.0, 0.0)):
        env = TradingEnvironment(market, config=small_config(
            cost=CostConfig(spread=spread, slippage=slip, rollover_multiplier=1.0)))
        env.reset(seed=0)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, info = env.step(2 if steps % 2 == 0 else 0)
            steps += 1
            done = terminated or truncated
        finals.append(info["equity"])
    # Without rollover widening, the mid is the ask minus a constant, so PnL is the same and
    # the first step opens 1 lot (5 USD), every later step flips 2 lots (10 USD).
    assert finals[1] - finals[0] == pytest.approx(5.0 + 10.0 * (steps - 1), abs=1e-6)
