"""Reward components: definitions, weights and scale, penalties, differential Sharpe ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _market_fixtures import random_walk_market, small_config

from fxai_tune.env import (
    REWARD_COMPONENTS,
    CostConfig,
    RewardConfig,
    RewardWeights,
    RewardSystem,
    TradingEnvironment,
    differential_sharpe,
)


def _rollout(reward: RewardConfig, actions, *, n: int = 400, cost: CostConfig | None = None):
    env = TradingEnvironment(random_walk_market(n, seed=5),
                             config=small_config(reward=reward, cost=cost or CostConfig()))
    env.reset(seed=0)
    out = []
    for a in actions:
        _, r, terminated, truncated, info = env.step(int(a))
        out.append((r, info))
        if terminated or truncated:
            break
    return out


def test_reward_is_scale_times_the_weighted_sum_of_the_raw_components():
    weights = {"pnl": 2.0, "transaction_cost": 0.5, "drawdown": 3.0, "inactivity": 0.1,
               "holding": 0.2, "differential_sharpe": 0.7}
    config = RewardConfig(weights=RewardWeights(**weights), scale=10.0, inactivity_after=1,
                          max_holding=2)
    actions = np.random.default_rng(0).integers(0, 3, 300)
    steps = _rollout(config, actions)
    seen = dict.fromkeys(REWARD_COMPONENTS, False)
    for r, info in steps:
        comps = info["reward_components"]
        assert list(comps) == list(REWARD_COMPONENTS)
        assert r == pytest.approx(10.0 * sum(weights[k] * comps[k] for k in comps), abs=1e-12)
        for k, v in comps.items():
            seen[k] |= v != 0.0
    assert all(seen.values()), seen


def test_drawdown_component_is_minus_the_increase_of_drawdown_from_the_peak():
    actions = np.random.default_rng(1).integers(0, 3, 300)
    steps = _rollout(RewardConfig(), actions)
    equity = np.array([100_000.0] + [info["equity"] for _, info in steps])
    peak = np.maximum.accumulate(equity)
    dd = 1.0 - equity / peak
    expected = -np.maximum(0.0, np.diff(dd))
    got = [info["reward_components"]["drawdown"] for _, info in steps]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert min(got) < 0.0


def test_inactivity_penalty_starts_after_inactivity_after_flat_steps():
    config = RewardConfig(inactivity_after=2)
    flat, long = 1, 2
    steps = _rollout(config, [flat, flat, flat, flat, long, flat, flat, flat])
    got = [info["reward_components"]["inactivity"] for _, info in steps]
    assert got == [0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0, -1.0]


def test_holding_penalty_starts_after_max_holding_steps_in_one_position():
    config = RewardConfig(max_holding=2)
    short, flat, long = 0, 1, 2
    steps = _rollout(config, [long, long, long, long, short, short, short, flat])
    got = [info["reward_components"]["holding"] for _, info in steps]
    assert got == [0.0, 0.0, -1.0, -1.0, 0.0, 0.0, -1.0, 0.0]


def test_differential_sharpe_matches_a_direct_computation():
    eta = 0.05
    actions = np.random.default_rng(2).integers(0, 3, 300)
    # a non-zero weight: at weight 0 the ratio is not computed (see the next test)
    steps = _rollout(RewardConfig(weights=RewardWeights(differential_sharpe=0.3), dsr_eta=eta),
                     actions)
    assert any(info["reward_components"]["differential_sharpe"] != 0.0 for _, info in steps)
    a = b = 0.0
    for _, info in steps:
        comps = info["reward_components"]
        r = comps["pnl"] + comps["transaction_cost"]
        var = b - a * a
        # Moody & Saffell (2001), eq. 19; 0 while there is no variance yet.
        expected = (b * (r - a) - 0.5 * a * (r * r - b)) / var**1.5 if var > 1e-9 * b else 0.0
        assert comps["differential_sharpe"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        a, b = a + eta * (r - a), b + eta * (r * r - b)


def test_reward_system_fast_path_matches_the_reference_formulas():
    rng = np.random.default_rng(3)
    n = 50
    equity_old = 1e5 + rng.normal(0, 1e3, n)
    gross = rng.normal(0, 100, n)
    cost = rng.uniform(0, 10, n)
    dd_old, dd_new = rng.uniform(0, 0.1, n), rng.uniform(0, 0.1, n)
    flat, hold = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, n).astype(float)
    dsr_a = rng.normal(0, 1e-4, n)
    dsr_b = dsr_a**2 + rng.uniform(1e-9, 1e-8, n)
    dsr_a[:5] = dsr_b[:5] = 0.0  # no variance yet
    weights = RewardWeights(differential_sharpe=0.7)
    system = RewardSystem(RewardConfig(weights=weights, inactivity_after=2, max_holding=3,
                                       dsr_eta=0.1))
    comps, a_new, b_new = system.components(
        equity_old=equity_old, gross=gross, cost=cost, dd_old=dd_old, dd_new=dd_new,
        flat_steps=flat, hold_steps=hold, dsr_a=dsr_a, dsr_b=dsr_b)
    # log of an equity ratio: ~1e-16 absolute error, loose relative to tiny log returns.
    np.testing.assert_allclose(comps[0], np.log1p(gross / equity_old), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(comps[1], np.log1p(-cost / (equity_old + gross)), rtol=1e-9,
                               atol=1e-15)
    np.testing.assert_array_equal(comps[2], -np.maximum(0.0, dd_new - dd_old))
    np.testing.assert_array_equal(comps[3], -(flat > 2).astype(float))
    np.testing.assert_array_equal(comps[4], -(hold > 3).astype(float))
    d, a_ref, b_ref = differential_sharpe(comps[0] + comps[1], dsr_a, dsr_b, 0.1)
    np.testing.assert_allclose(comps[5], d, rtol=1e-12)
    assert np.all(comps[5][:5] == 0.0) and np.all(d[5:] != 0.0)
    np.testing.assert_allclose(a_new, a_ref, rtol=1e-12)
    np.testing.assert_allclose(b_new, b_ref, rtol=1e-12)
    assert system.breakdown(comps)["holding"] is not None
    np.testing.assert_allclose(
        system.reward(comps),
        100.0 * (weights.drawdown * comps[2] + comps[0] + comps[1] + 0.7 * comps[5]),
        rtol=1e-12)


def test_differential_sharpe_at_weight_zero_is_skipped_and_reported_as_zero():
    actions = np.random.default_rng(6).integers(0, 3, 300)
    weighted = RewardConfig(weights=RewardWeights(differential_sharpe=0.7))
    skipped, computed = _rollout(RewardConfig(), actions), _rollout(weighted, actions)
    assert len(skipped) == len(computed)
    for (_, info), (_, ref) in zip(skipped, computed, strict=True):
        comps, ref_comps = info["reward_components"], ref["reward_components"]
        assert list(comps) == list(REWARD_COMPONENTS)  # the key stays
        assert comps["differential_sharpe"] == 0.0
        # the other components and the account do not depend on the ratio
        for k in REWARD_COMPONENTS[:-1]:
            assert comps[k] == ref_comps[k], k
        assert info["equity"] == ref["equity"]
    assert any(ref["reward_components"]["differential_sharpe"] != 0.0 for _, ref in computed)
    # the plain-array path: row 0 and the moving moments unchanged
    system = RewardSystem(RewardConfig())
    assert not system.computes_dsr
    ones = np.ones(3)
    comps, a, b = system.components(
        equity_old=1e5 * ones, gross=ones, cost=0.1 * ones, dd_old=0 * ones, dd_new=0 * ones,
        flat_steps=ones, hold_steps=ones, dsr_a=1e-4 * ones, dsr_b=2e-8 * ones)
    assert np.all(comps[5] == 0.0) and np.all(comps[0] > 0.0)
    np.testing.assert_array_equal(a, 1e-4 * ones)
    np.testing.assert_array_equal(b, 2e-8 * ones)


def test_default_reward_is_scaled_net_log_return_plus_half_the_drawdown_penalty():
    steps = _rollout(RewardConfig(), np.random.default_rng(4).integers(0, 3, 50))
    for r, info in steps:
        c = info["reward_components"]
        assert r == pytest.approx(100.0 * (c["pnl"] + c["transaction_cost"]
                                           + 0.5 * c["drawdown"]), abs=1e-12)
        assert math.isfinite(r)
