"""PnL and cost accounting of the trading environment, checked by hand on a tiny series.

Series (ASK prices; 1 lot = 100,000 units; decisions start at bar 3; fills at the next open):

    bar    0       1       2       3       4       5       6       7       8       9
    open   1.1000  1.1005  1.1012  1.1022  1.1010  1.1035  1.1045  1.1038  1.1065  1.1075
    close  1.1000  1.1010  1.1020  1.1015  1.1030  1.1050  1.1040  1.1060  1.1070  1.1080
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _market_fixtures import FLAT, LONG, SHORT, make_market, small_config, zero_cost
from _market_fixtures import TINY_CLOSE as CLOSE
from _market_fixtures import TINY_OPEN as OPEN

from fxai_tune.env import CostConfig, TradingEnvironment

LOT = 100_000.0
E0 = 100_000.0


def _env(cost: CostConfig | None = None, **market_kwargs) -> TradingEnvironment:
    market = make_market(CLOSE, open_=OPEN, **market_kwargs)
    env = TradingEnvironment(market, config=small_config(cost=cost or zero_cost()))
    env.reset(seed=0)
    return env


def _equities(env: TradingEnvironment, actions: list[int]) -> list[float]:
    return [env.step(a)[4]["equity"] for a in actions]


def test_long_one_step_earns_units_times_the_bar_move_then_the_gap():
    env = _env()
    e1, e2 = _equities(env, [LONG, FLAT])
    # Fill at open[4] = 1.1010, marked at close[4] = 1.1030: +0.0020 x 100,000.
    assert e1 == pytest.approx(E0 + 200.0, abs=1e-6)
    # Closing at open[5] = 1.1035 adds the gap from close[4]: +0.0005 x 100,000.
    assert e2 == pytest.approx(E0 + 250.0, abs=1e-6)


def test_short_earns_the_negative_of_the_price_move():
    env = _env()
    e1, e2 = _equities(env, [SHORT, SHORT])
    assert e1 == pytest.approx(E0 - 200.0, abs=1e-6)
    # Held over bar 5: gap 1.1035 - 1.1030 and body 1.1050 - 1.1035, both against the short.
    assert e2 == pytest.approx(E0 - 200.0 - 50.0 - 150.0, abs=1e-6)


def test_flip_pays_the_gap_on_the_old_side_and_the_bar_on_the_new_side():
    env = _env()
    e1, e2 = _equities(env, [LONG, SHORT])
    # Long gap close[4] -> open[5]: +50; short over bar 5 (1.1035 -> 1.1050): -150.
    assert e2 - e1 == pytest.approx(50.0 - 150.0, abs=1e-6)


def test_spread_and_slippage_in_pips_cost_half_spread_plus_slippage_per_unit_and_side():
    cost = CostConfig(unit="pips", spread=0.8, slippage=0.1)
    e_long, e_flat = _equities(_env(cost), [LONG, FLAT])
    per_side = LOT * (0.4 + 0.1) * 1e-4  # 5 USD
    assert e_long == pytest.approx(E0 + 200.0 - per_side, abs=1e-6)
    assert e_flat == pytest.approx(E0 + 250.0 - 2 * per_side, abs=1e-6)
    # A flip trades 2 lots.
    e1, e2 = _equities(_env(cost), [LONG, SHORT])
    assert (e2 - e1) == pytest.approx(-100.0 - 2 * per_side, abs=1e-6)


def test_costs_in_price_units_match_the_same_costs_in_pips():
    pips = _equities(_env(CostConfig(unit="pips", spread=2.0, slippage=0.5)), [LONG, FLAT])
    price = _equities(_env(CostConfig(unit="price", spread=2e-4, slippage=5e-5)), [LONG, FLAT])
    np.testing.assert_allclose(pips, price, rtol=0, atol=1e-6)
    assert price[-1] == pytest.approx(E0 + 250.0 - 2 * LOT * (1e-4 + 5e-5), abs=1e-6)


def test_pip_size_of_jpy_pairs_scales_pip_costs():
    cost = CostConfig(unit="pips", spread=1.0, slippage=0.0)
    e_eur = _equities(_env(cost), [LONG])[0]
    e_jpy = _equities(_env(cost, pip_size=0.01), [LONG])[0]
    assert E0 + 200.0 - e_eur == pytest.approx(LOT * 0.5e-4, abs=1e-6)
    assert E0 + 200.0 - e_jpy == pytest.approx(LOT * 0.5e-2, abs=1e-6)


def test_commission_is_charged_per_lot_and_side():
    cost = CostConfig(spread=0.0, slippage=0.0, commission_per_lot=3.5)
    e1, e2, e3 = _equities(_env(cost), [LONG, SHORT, FLAT])
    assert e1 == pytest.approx(E0 + 200.0 - 3.5, abs=1e-6)
    assert e2 - e1 == pytest.approx(50.0 - 150.0 - 7.0, abs=1e-6)  # flip: 2 lots
    # Short from close[5]=1.1050: gap to open[6]=1.1045 earns +50, then closes: 1 lot.
    assert e3 - e2 == pytest.approx(50.0 - 3.5, abs=1e-6)


def test_rollover_hours_widen_the_configured_spread():
    cost = CostConfig(spread=1.0, slippage=0.0, rollover_multiplier=3.0, rollover_hours=[21])
    # first_hour=17 puts bar 4 (the fill bar of the first decision) at 21:00 UTC.
    env = _env(cost, first_hour=17)
    e1 = _equities(env, [LONG])[0]
    # Half the widened spread: 1.5 pips per unit; the mark is also shifted by 1.5 pips.
    assert E0 + 200.0 - e1 == pytest.approx(LOT * 1.5e-4, abs=1e-6)
    e2 = _equities(env, [FLAT])[0]
    # Bar 5 is at 22:00 (normal spread): the gap of the mid widens by (1.5 - 0.5) pips and
    # closing costs 0.5 pips.
    assert e2 - e1 == pytest.approx(50.0 + LOT * 1.0e-4 - LOT * 0.5e-4, abs=1e-6)


@pytest.mark.parametrize("side, sign", [("ask", -1.0), ("bid", 1.0), ("mid", 0.0)])
def test_data_spread_sets_costs_and_the_mid_price_of_each_side(side, sign):
    spread = np.linspace(1e-4, 3e-4, len(CLOSE))
    cost = CostConfig(spread_from_data=True, slippage=0.0)
    env = _env(cost, spread=spread, price_side=side)
    e1, e2 = _equities(env, [LONG, FLAT])
    mid_open = np.array(OPEN) + sign * spread / 2
    mid_close = np.array(CLOSE) + sign * spread / 2
    body = LOT * (mid_close[4] - mid_open[4])
    gap = LOT * (mid_open[5] - mid_close[4])
    assert e1 == pytest.approx(E0 + body - LOT * spread[4] / 2, abs=1e-6)
    assert e2 == pytest.approx(e1 + gap - LOT * spread[5] / 2, abs=1e-6)


def test_several_position_sizes_give_symmetric_targets_in_lots():
    market = make_market(CLOSE, open_=OPEN)
    env = TradingEnvironment(market, config=small_config(position_sizes=[2.0, 0.5]))
    env.reset(seed=0)
    assert env.action_space.n == 5
    assert env.engine.targets.tolist() == [-2 * LOT, -0.5 * LOT, 0.0, 0.5 * LOT, 2 * LOT]
    obs, _, _, _, info = env.step(4)
    assert info["position"] == 2 * LOT
    assert info["equity"] == pytest.approx(E0 + 400.0, abs=1e-6)
    assert obs["portfolio"][0] == 1.0
    obs, _, _, _, info = env.step(1)
    assert obs["portfolio"][0] == -0.25


def test_portfolio_observation_holds_position_open_pnl_time_and_drawdown():
    cost = CostConfig(spread=0.0, slippage=0.0, commission_per_lot=10.0)
    env = TradingEnvironment(make_market(CLOSE, open_=OPEN),
                             config=small_config(cost=cost, position_time_scale=4.0))
    env.reset(seed=0)
    obs, *_ = env.step(SHORT)  # -200 - 10
    e1 = E0 - 210.0
    np.testing.assert_allclose(obs["portfolio"], [-1.0, -210.0 / e1, 0.25, 210.0 / E0],
                               rtol=1e-6)
    obs, *_ = env.step(SHORT)  # another -200
    e2 = e1 - 200.0
    np.testing.assert_allclose(obs["portfolio"], [-1.0, -410.0 / e2, 0.5, 410.0 / E0],
                               rtol=1e-6)
    obs, *_ = env.step(FLAT)
    assert obs["portfolio"][:3].tolist() == [0.0, 0.0, 0.0]


def test_observation_windows_hold_only_completed_bars():
    env = TradingEnvironment(make_market(CLOSE, open_=OPEN), config=small_config())
    obs, _ = env.reset(seed=0)
    for t in range(3, 9):
        # Base feature 0 is the bar index: the window ends at the decision bar t.
        assert obs["1h"][:, 0].tolist() == [t - 3, t - 2, t - 1, t]
        last_2h = (t + 1) // 2 - 1  # 2h bar j is complete at the close of base bar 2j + 1
        assert obs["2h"][:, 0].tolist() == [last_2h - 1, last_2h]
        assert obs["1h"].dtype == np.float32
        obs, *_ = env.step(FLAT)


def test_net_log_return_of_equity_is_the_sum_of_pnl_and_cost_components():
    env = _env(CostConfig(spread=1.0, slippage=0.2, commission_per_lot=2.0))
    equity = E0
    for a in [LONG, LONG, SHORT, FLAT, SHORT]:
        _, _, _, _, info = env.step(a)
        comps = info["reward_components"]
        assert comps["pnl"] + comps["transaction_cost"] == pytest.approx(
            math.log(info["equity"] / equity), abs=1e-12)
        assert comps["transaction_cost"] <= 0.0
        equity = info["equity"]
