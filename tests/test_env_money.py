"""Money (issue 13): P&L in the account currency, margin and leverage, financing, costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _market_fixtures import FLAT, LONG, make_market, small_config

from fxai_tune.data import DataConfig, DataError, DataManager, rollover_nights
from fxai_tune.env import (
    CostConfig,
    EnvConfig,
    FinancingConfig,
    TradingEnvironment,
    VectorTradingEnv,
)

LOT = 100_000.0
E0 = 100_000.0


def _run(market, actions, **config_kwargs) -> list[dict]:
    env = TradingEnvironment(market, config=small_config(**config_kwargs))
    env.reset(seed=0)
    infos = []
    for a in actions:
        *_, terminated, truncated, info = env.step(a)
        infos.append(info)
        if terminated or truncated:
            break
    return infos


# -- account currency --------------------------------------------------------------------------


def test_the_same_relative_path_as_eurusd_and_as_usdjpy_x100_gives_about_the_same_return():
    rng = np.random.default_rng(0)
    path = np.exp(np.cumsum(np.r_[0.0, 5e-3 * rng.standard_normal(79)]))  # ~1.0, moves ~0.5%
    eurusd = make_market(path, symbol="EURUSD", price_side="mid")
    usdjpy = make_market(100.0 * path, symbol="USDJPY", price_side="mid", pip_size=0.01)
    actions = [LONG] * 70
    r_eur = _run(eurusd, actions)[-1]["equity"] / E0 - 1.0
    r_jpy = _run(usdjpy, actions)[-1]["equity"] / E0 - 1.0
    assert abs(r_eur) > 0.01  # the path moved
    # Long 100,000 EUR at ~1 USD vs long 100,000 USD: the same exposure up to the price level.
    assert r_jpy == pytest.approx(r_eur, rel=0.1)


def test_an_inverse_pair_converts_each_step_at_the_close_rate():
    close = [110.0, 110.0, 110.0, 110.0, 111.0, 111.0]
    market = make_market(close, symbol="USDJPY", price_side="mid", pip_size=0.01)
    (info,) = _run(market, [LONG])
    # +1 JPY per USD on 100,000 USD = 100,000 JPY, at 111 JPY per USD.
    assert info["equity"] == pytest.approx(E0 + LOT * 1.0 / 111.0, rel=1e-12)


@pytest.mark.parametrize("conversion_symbol, rate", [("GBPUSD", 1.25), ("USDGBP", 1 / 1.25)])
def test_a_cross_pair_converts_through_the_given_rate_series(conversion_symbol, rate):
    close = [0.88, 0.88, 0.88, 0.88, 0.89, 0.89]
    market = make_market(close, symbol="EURGBP", price_side="mid",
                         conversion=np.full(len(close), rate),
                         conversion_symbol=conversion_symbol)
    (info,) = _run(market, [LONG])
    assert info["equity"] == pytest.approx(E0 + LOT * 0.01 * 1.25, rel=1e-9)


def test_a_cross_pair_without_its_rate_series_is_refused_naming_the_missing_rate():
    market = make_market([0.88] * 8, symbol="EURGBP")
    with pytest.raises(ValueError, match="GBPUSD"):
        TradingEnvironment(market, config=small_config())


def test_a_rate_series_of_the_wrong_pair_is_refused():
    market = make_market([0.88] * 8, symbol="EURGBP", conversion=np.ones(8),
                         conversion_symbol="EURUSD")
    with pytest.raises(ValueError, match="conversion_symbol"):
        TradingEnvironment(market, config=small_config())


def test_an_undeclared_pair_is_refused():
    market = make_market([1.1] * 8, symbol=None)
    with pytest.raises(ValueError, match="symbol"):
        TradingEnvironment(market, config=small_config())


def test_the_account_currency_sets_the_direct_case():
    close = [1.1, 1.1, 1.1, 1.1, 1.2, 1.2]
    market = make_market(close, symbol="EURUSD", price_side="mid")
    (info,) = _run(market, [LONG], account_currency="EUR")  # EURUSD for a EUR account: inverse
    assert info["equity"] == pytest.approx(E0 + LOT * 0.1 / 1.2, rel=1e-12)


@pytest.mark.parametrize("value", ["usd", "US", "DOLLAR", 3])
def test_a_bad_account_currency_is_refused(value):
    with pytest.raises((ValueError, TypeError), match="account_currency"):
        EnvConfig(account_currency=value)


def test_flat_steps_are_unaffected_by_the_conversion():
    market = make_market([110.0] * 8, symbol="USDJPY", pip_size=0.01)
    infos = _run(market, [FLAT, FLAT])
    assert [i["equity"] for i in infos] == [E0, E0]


def _write_bars(path, closes, start="2017-01-02 00:00", drop=()):
    stamps = pd.date_range(start, periods=len(closes), freq="1h")
    opens = np.r_[closes[:1], closes[:-1]]
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "open": opens,
                          "high": np.maximum(opens, closes), "low": np.minimum(opens, closes),
                          "close": closes})
    frame.drop(index=list(drop)).to_csv(path, index=False)
    return str(path)


def test_the_data_manager_aligns_a_conversion_series_on_the_traded_pairs_bars(tmp_path):
    rng = np.random.default_rng(1)
    eurgbp = _write_bars(tmp_path / "eurgbp.csv",
                         0.88 * np.exp(np.cumsum(1e-3 * rng.standard_normal(120))))
    gbp = 1.25 * np.exp(np.cumsum(1e-3 * rng.standard_normal(120)))
    gbpusd = _write_bars(tmp_path / "gbpusd.csv", gbp, drop=[50])  # one bar missing
    config = DataConfig(source=eurgbp, symbol="EURGBP", conversion_source=gbpusd,
                        conversion_symbol="GBPUSD", split_fractions=(0.6, 0.2, 0.2))
    market = DataManager(config, windows={"1h": 4}).market("train")
    assert (market.symbol, market.conversion_symbol) == ("EURGBP", "GBPUSD")
    expected = np.r_[gbp[:50], gbp[49], gbp[51:]]  # the missing bar takes the last close
    np.testing.assert_allclose(market.conversion, expected, rtol=1e-12)
    TradingEnvironment(market, config=EnvConfig(windows={"1h": 4}))  # converts: accepted


def test_a_conversion_series_that_starts_late_is_refused(tmp_path):
    closes = np.full(120, 0.88)
    eurgbp = _write_bars(tmp_path / "eurgbp.csv", closes)
    gbpusd = _write_bars(tmp_path / "gbpusd.csv", np.full(100, 1.25), start="2017-01-02 05:00")
    config = DataConfig(source=eurgbp, symbol="EURGBP", conversion_source=gbpusd,
                        conversion_symbol="GBPUSD")
    with pytest.raises(DataError, match="GBPUSD"):
        DataManager(config, windows={"1h": 4})


def test_a_file_without_a_declared_pair_reaches_the_env_as_undeclared_and_is_refused(tmp_path):
    path = _write_bars(tmp_path / "bars.csv", np.full(120, 1.1))
    market = DataManager(DataConfig(source=path), windows={"1h": 4}).market("train")
    assert market.symbol is None
    with pytest.raises(ValueError, match="DataConfig.symbol"):
        TradingEnvironment(market, config=EnvConfig(windows={"1h": 4}))


@pytest.mark.parametrize("kwargs, field", [
    ({"symbol": "EURO"}, "symbol"),
    ({"symbol": "EUREUR"}, "symbol"),
    ({"conversion_symbol": "GBPUSD"}, "conversion_source"),
])
def test_bad_pair_settings_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DataConfig(**kwargs)


# -- margin and leverage -----------------------------------------------------------------------


def test_an_order_the_margin_cannot_carry_is_refused_and_the_position_kept():
    market = make_market([1.1] * 10, price_side="mid")
    # 40 lots of EURUSD at 1.1 = 4.4M USD; at 30:1 they need 146,667 USD of margin > 100,000.
    # actions: 0 short 40, 1 short 1, 2 flat, 3 long 1, 4 long 40
    infos = _run(market, [3, 3, 0, 4], position_sizes=[1.0, 40.0], leverage=30.0)
    assert [i["position"] for i in infos] == [LOT, LOT, LOT, LOT]  # 40 lots refused: long 1 kept
    infos = _run(market, [3, 4], position_sizes=[1.0, 40.0], leverage=50.0)  # 88,000: carried
    assert [i["position"] for i in infos] == [LOT, 40 * LOT]


def test_refused_orders_and_stop_outs_are_counted_in_the_episode_statistics():
    market = make_market([1.1] * 10, price_side="mid")
    # long 1, then short 40 twice and long 40 (each needs 146,667 USD of margin: refused)
    infos = _run(market, [3, 0, 0, 4, 3, 3], position_sizes=[1.0, 40.0], leverage=30.0)
    assert "trading_episode" not in infos[-2]
    episode = infos[-1]["trading_episode"]
    assert (episode["refused_orders"], episode["stop_out"]) == (3, 0)
    close = [1.1, 1.1, 1.1, 1.1, 1.08, 1.08, 1.08, 1.08]
    low = [1.1, 1.1, 1.1, 1.1, 1.05, 1.08, 1.08, 1.08]
    stopped = make_market(close, low=low, price_side="mid")
    (info,) = _run(stopped, [2], position_sizes=[20.0], leverage=100.0)
    assert (info["trading_episode"]["refused_orders"], info["trading_episode"]["stop_out"]) == (
        0, 1)
    vec = VectorTradingEnv(market, num_envs=1, config=small_config(
        position_sizes=[1.0, 40.0], leverage=30.0))
    vec.reset(seed=0)
    for a in [3, 0, 0, 4, 3, 3]:
        *_, infos = vec.step(np.array([a]))
    assert infos["trading_episode"]["refused_orders"].tolist() == [3]
    assert infos["final_info"]["trading_episode"]["stop_out"].tolist() == [0]


def test_a_stop_out_closes_the_position_where_the_margin_level_reaches_the_stop_out_level():
    close = [1.1, 1.1, 1.1, 1.1, 1.08, 1.08, 1.08, 1.08]
    low = [1.1, 1.1, 1.1, 1.1, 1.05, 1.08, 1.08, 1.08]
    market = make_market(close, low=low, price_side="mid")
    env = TradingEnvironment(market, config=small_config(
        position_sizes=[20.0], leverage=100.0, stop_out_level=0.5))
    env.reset(seed=0)
    obs, _, terminated, truncated, info = env.step(2)  # long 20 lots at 1.1
    # Used margin 2,000,000 x 1.1 / 100 = 22,000; stop-out at equity 11,000: a loss of 89,000,
    # i.e. 4.45 cents: the position is closed at 1.0555 on the way to the bar's low of 1.05.
    assert terminated and not truncated
    assert info["equity"] == pytest.approx(11_000.0, rel=1e-9)
    assert info["position"] == 0.0
    assert obs["portfolio"][0] == 0.0
    assert info["trading_episode"]["losses"] == 1
    assert obs in env.observation_space


def test_no_stop_out_while_the_margin_level_stays_above_the_stop_out_level():
    close = [1.1, 1.1, 1.1, 1.1, 1.08, 1.08, 1.08, 1.08]
    low = [1.1, 1.1, 1.1, 1.1, 1.06, 1.08, 1.08, 1.08]  # equity 20,000 at the low: level 0.91
    market = make_market(close, low=low, price_side="mid")
    infos = _run(market, [2], position_sizes=[20.0], leverage=100.0, stop_out_level=0.5)
    assert infos[0]["equity"] == pytest.approx(E0 - 2e6 * 0.02, rel=1e-9)
    assert infos[0]["position"] == 20 * LOT


def test_a_gap_through_zero_equity_stops_out_at_the_open_and_keeps_features_in_their_bounds():
    # 20 lots long into a 1,000-pip gap: the open is far past the stop-out and zero equity.
    close = [1.1, 1.1, 1.1, 1.1, 1.1, 1.0, 1.0, 1.0]
    open_ = [1.1, 1.1, 1.1, 1.1, 1.1, 1.0, 1.0, 1.0]
    market = make_market(close, open_=open_, price_side="mid")
    env = TradingEnvironment(market, config=small_config(position_sizes=[20.0]))
    env.reset(seed=0)
    obs, *_ = env.step(2)
    obs, _, terminated, _, info = env.step(2)
    assert terminated
    assert info["equity"] == 0.0  # negative balance protection: the loss stops at the deposit
    assert obs["portfolio"][3] == 1.0  # drawdown
    assert obs in env.observation_space
    assert np.isfinite(info["reward_components"]["pnl"])


def test_observations_stay_in_their_declared_space_on_extreme_random_paths():
    rng = np.random.default_rng(3)
    steps = 4e-2 * rng.standard_normal(300) * (rng.random(300) < 0.1)  # rare 4% jumps
    market = make_market(1.1 * np.exp(np.cumsum(steps)), price_side="mid")
    env = TradingEnvironment(market, config=small_config(
        mode="random", episode_length=50, position_sizes=[1.0, 10.0, 25.0], leverage=500.0))
    space = env.observation_space
    ended = 0
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        assert obs in space
        for a in rng.integers(0, env.action_space.n, 50):
            obs, _, terminated, truncated, info = env.step(a)
            assert obs in space, (seed, obs["portfolio"])
            assert info["equity"] >= 0.0
            if terminated or truncated:
                ended += terminated
                break
    assert ended >= 3  # stop-outs happened


@pytest.mark.parametrize("kwargs, field", [
    ({"leverage": 0.0}, "leverage"),
    ({"stop_out_level": 0.0}, "stop_out_level"),
    ({"stop_out_level": 1.5}, "stop_out_level"),
])
def test_bad_margin_settings_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EnvConfig(**kwargs)


# -- financing ---------------------------------------------------------------------------------


def test_rollover_nights_count_one_per_fx_day_and_three_for_wednesdays_roll():
    # Winter: the roll (17:00 New York) is at 22:00 UTC; a bar opening then starts a new day.
    index = pd.date_range("2017-01-02 00:00", "2017-01-13 21:00", freq="1h", tz="UTC")
    index = index[index.day_of_week < 5]  # Monday 00:00 .. Friday 21:00, two weeks (no weekend)
    nights = rollover_nights(index)
    rolled = index[nights > 0]
    assert set(rolled.hour) == {0, 22}  # 0: Monday's first bar after the weekend gap
    by_day = {str(t.date()): int(n) for t, n in zip(index, nights, strict=True) if n}
    assert by_day["2017-01-02"] == 1  # Monday's roll
    assert by_day["2017-01-04"] == 3  # Wednesday's: the weekend's value days
    assert by_day["2017-01-05"] == 1
    # Friday's roll: the bar of Friday 21:00 is followed by Monday 00:00 in this index.
    assert by_day["2017-01-09"] == 1
    # Summer (EDT): 17:00 New York is 21:00 UTC.
    summer = pd.date_range("2017-07-03 00:00", periods=48, freq="1h", tz="UTC")
    assert summer[rollover_nights(summer) > 0].hour.tolist() == [21, 21]  # Monday, Tuesday


def test_a_position_held_through_the_rollover_pays_its_swap_and_triple_on_wednesday():
    market = make_market([1.1] * 100, price_side="mid")  # Monday 2017-01-02 00:00 UTC on
    financing = FinancingConfig(unit="pips", swap_long=-0.5, swap_short=0.2)
    env = TradingEnvironment(market, config=small_config(financing=financing))
    env.reset(seed=0)
    charges = {}
    equity = E0
    for t in range(3, 98):
        *_, info = env.step(LONG)
        if info["equity"] != equity:
            charges[t + 1] = round(info["equity"] - equity, 9)
        equity = info["equity"]
    # Rolls at the bars of 22:00 UTC: Monday (22), Tuesday (46), Wednesday (70, x3), Thursday
    # (94); 0.5 pips x 100,000 = 5 USD a night.
    assert charges == {22: -5.0, 46: -5.0, 70: -15.0, 94: -5.0}


def test_a_short_earns_a_positive_swap_and_a_flat_account_pays_none():
    market = make_market([1.1] * 30, price_side="mid")
    financing = FinancingConfig(unit="pips", swap_long=-0.5, swap_short=0.2)
    short = _run(market, [0] * 25, financing=financing)
    assert short[-1]["equity"] == pytest.approx(E0 + 2.0)  # one roll, +0.2 pips x 100,000
    flat = _run(market, [FLAT] * 25, financing=financing)
    assert flat[-1]["equity"] == E0


def test_an_annual_swap_rate_charges_the_notional_over_360_days():
    market = make_market([1.1] * 30, price_side="mid")
    financing = FinancingConfig(unit="annual_rate", swap_long=-0.036)
    infos = _run(market, [LONG] * 25, financing=financing)
    # 110,000 USD notional x 3.6% / 360 = 11 USD for the night.
    assert infos[-1]["equity"] == pytest.approx(E0 - 11.0, rel=1e-12)


def test_a_swap_in_points_is_a_tenth_of_a_pip_and_converts_to_the_account_currency():
    market = make_market([110.0] * 30, price_side="mid", symbol="USDJPY", pip_size=0.01)
    financing = FinancingConfig(unit="points", swap_long=-11.0)  # 11 points = 0.011 JPY
    infos = _run(market, [LONG] * 25, financing=financing)
    assert infos[-1]["equity"] == pytest.approx(E0 - LOT * 0.011 / 110.0, rel=1e-12)


@pytest.mark.parametrize("kwargs, field", [
    ({"unit": "percent"}, "unit"),
    ({"swap_long": float("nan")}, "swap_long"),
])
def test_bad_financing_settings_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FinancingConfig(**kwargs)


# -- costs -------------------------------------------------------------------------------------


def test_slippage_per_lot_grows_with_the_size_traded():
    market = make_market([1.1] * 10, price_side="mid")
    cost = CostConfig(spread=0.0, slippage=0.1, slippage_per_lot=0.2)
    (one,) = _run(market, [3], cost=cost, position_sizes=[1.0, 5.0])
    (five,) = _run(market, [4], cost=cost, position_sizes=[1.0, 5.0])
    # per unit: 0.1 pips + 0.2 pips x lots traded
    assert E0 - one["equity"] == pytest.approx(LOT * (0.1 + 0.2 * 1) * 1e-4, rel=1e-9)
    assert E0 - five["equity"] == pytest.approx(5 * LOT * (0.1 + 0.2 * 5) * 1e-4, rel=1e-9)


def test_slippage_scales_with_the_volatility_known_at_the_decision():
    volatility = np.zeros(10)
    volatility[3] = 2e-3  # the decision bar's realised volatility (log returns per bar)
    market = make_market([1.1] * 10, price_side="mid", volatility=volatility)
    cost = CostConfig(spread=0.0, slippage=0.0, slippage_volatility=0.5)
    (info,) = _run(market, [LONG], cost=cost)
    assert E0 - info["equity"] == pytest.approx(LOT * 0.5 * 2e-3 * 1.1, rel=1e-9)


def test_volatility_slippage_without_a_volatility_series_is_refused():
    market = make_market([1.1] * 10)
    with pytest.raises(ValueError, match="slippage_volatility"):
        TradingEnvironment(market, config=small_config(
            cost=CostConfig(slippage_volatility=0.5)))


def _write_spread_bars(path, closes, spread):
    stamps = pd.date_range("2017-01-02 00:00", periods=len(closes), freq="1h")
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "open": closes,
                  "high": closes, "low": closes, "close": closes, "spread": spread}
                 ).to_csv(path, index=False)
    return str(path)


def test_a_spread_column_of_undeclared_unit_is_refused(tmp_path):
    path = _write_spread_bars(tmp_path / "bars.csv", np.full(120, 1.1), np.full(120, 8.0))
    with pytest.raises(DataError, match="spread_unit"):
        DataManager(DataConfig(source=path, symbol="EURUSD"), windows={"1h": 4})


@pytest.mark.parametrize("unit, value, price", [("points", 8.0, 8e-5), ("pips", 0.8, 8e-5),
                                                ("price", 8e-5, 8e-5)])
def test_a_spread_column_is_read_in_its_declared_unit(tmp_path, unit, value, price):
    path = _write_spread_bars(tmp_path / "bars.csv", np.full(120, 1.1), np.full(120, value))
    config = DataConfig(source=path, symbol="EURUSD", spread_unit=unit)
    market = DataManager(config, windows={"1h": 4}).market("train")
    np.testing.assert_allclose(market.spread, price, rtol=1e-12)


def test_bid_and_ask_files_give_the_per_bar_spread(tmp_path):
    rng = np.random.default_rng(2)
    bid = 1.1 * np.exp(np.cumsum(1e-3 * rng.standard_normal(120)))
    spread = rng.uniform(0.5e-4, 3e-4, 120)
    bid_path = _write_bars(tmp_path / "bid.csv", bid)
    ask_path = _write_bars(tmp_path / "ask.csv", bid + spread)
    config = DataConfig(source=bid_path, symbol="EURUSD", price_side="bid",
                        other_side_source=ask_path)
    market = DataManager(config, windows={"1h": 4}).market("train")
    opens = np.r_[bid[:1] + spread[:1], bid[:-1] + spread[:-1]] - np.r_[bid[:1], bid[:-1]]
    np.testing.assert_allclose(market.spread, opens, rtol=1e-9)  # at the open: the fill


def test_an_other_side_file_needs_a_declared_price_side(tmp_path):
    path = _write_bars(tmp_path / "bid.csv", np.full(50, 1.1))
    with pytest.raises(ValueError, match="price_side"):
        DataConfig(source=path, other_side_source=path)
