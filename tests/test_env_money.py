"""Money (issue 13): P&L in the account currency, margin and leverage, financing, costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _market_fixtures import FLAT, LONG, make_market, small_config

from fxai_tune.data import DataConfig, DataError, DataManager
from fxai_tune.env import EnvConfig, TradingEnvironment

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
