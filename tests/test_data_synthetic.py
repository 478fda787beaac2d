"""Synthetic bars: determinism, FX-like shape, and a planted signal the oracle can exploit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fxai_tune.data import (
    SyntheticConfig,
    calendar_periods_per_year,
    fx_bins,
    generate_synthetic_bars,
    oracle_positions,
    resample_bars,
)

N_BARS = 6000


def _oracle_log_returns(bars: pd.DataFrame, believed_strength: float) -> np.ndarray:
    """Per-bar log return of holding ``oracle_positions`` over the next bar (no costs)."""
    positions = oracle_positions(bars, believed_strength)
    returns = np.diff(np.log(bars["close"].to_numpy()))
    return positions[:-1] * returns


def _t_stat(x: np.ndarray) -> float:
    return float(x.mean() / x.std() * np.sqrt(len(x))) if x.std() > 0 else 0.0


def test_same_seed_gives_the_same_bars_and_another_seed_differs() -> None:
    cfg = SyntheticConfig(seed=7, n_bars=2000, signal_strength=0.2)
    first, again = generate_synthetic_bars(cfg), generate_synthetic_bars(cfg)
    pd.testing.assert_frame_equal(first, again)
    other = generate_synthetic_bars(SyntheticConfig(seed=8, n_bars=2000, signal_strength=0.2))
    assert not np.allclose(first["close"].to_numpy(), other["close"].to_numpy())


def test_bars_are_valid_continuous_ohlc_with_spread() -> None:
    bars = generate_synthetic_bars(SyntheticConfig(seed=1, n_bars=3000, spread_pips=0.8))
    assert list(bars.columns) == ["open", "high", "low", "close", "volume", "spread"]
    o, h, lo, c = (bars[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all()
    np.testing.assert_array_equal(o[1:], c[:-1])  # the next bar opens at the last close
    assert bars["spread"].min() == pytest.approx(0.8 * 0.0001)
    roll = bars.index.hour == 22
    assert bars["spread"][roll].min() == pytest.approx(3 * 0.8 * 0.0001)


def test_timestamps_skip_the_fx_weekend() -> None:
    bars = generate_synthetic_bars(SyntheticConfig(n_bars=500, timeframe="1h"))
    index = bars.index
    assert str(index.tz) == "UTC" and index.is_monotonic_increasing
    assert not (index.day_of_week == 5).any()  # Saturday
    assert not ((index.day_of_week == 4) & (index.hour >= 22)).any()  # after Friday close
    assert not ((index.day_of_week == 6) & (index.hour < 22)).any()  # before Sunday open
    daily = generate_synthetic_bars(SyntheticConfig(n_bars=30, timeframe="1d"))
    assert np.median(np.diff(daily.index.asi8)) == pd.Timedelta(days=1).value


def test_timestamps_follow_the_new_york_fx_week_across_daylight_saving() -> None:
    """A year of hourly bars (winter and summer): every FX day of the calendar holds 24 bars,
    each week opens Sunday 17:00 and closes Friday 17:00 New York, so the calendar
    annualises with 6,240 bars (it had 23-bar Mondays and 25-bar Fridays in summer)."""
    bars = generate_synthetic_bars(SyntheticConfig(n_bars=6240, timeframe="1h"))
    index = bars.index
    assert (np.bincount(fx_bins(index, "1d").codes) == 24).all()
    new_york = index.tz_convert("America/New_York")
    week_opens = new_york[1:][np.diff(index.asi8) > pd.Timedelta(hours=1).value]
    assert (week_opens.day_name() == "Sunday").all() and (week_opens.hour == 17).all()
    assert {21, 22} == set(index[1:][np.diff(index.asi8) > pd.Timedelta(hours=1).value].hour)
    assert not ((new_york.day_of_week == 4) & (new_york.hour >= 17)).any()
    assert calendar_periods_per_year(index) == 6240
    assert len(resample_bars(bars, "1d")) == 260


def test_return_volatility_matches_the_config_whatever_the_signal() -> None:
    for strength in (0.0, 0.4):
        cfg = SyntheticConfig(seed=2, n_bars=N_BARS, volatility=0.002, signal_strength=strength)
        returns = np.diff(np.log(generate_synthetic_bars(cfg)["close"].to_numpy()))
        assert returns.std() == pytest.approx(0.002, rel=0.1)


def test_planted_signal_shows_as_lag_one_autocorrelation() -> None:
    cfg = SyntheticConfig(seed=4, n_bars=N_BARS, signal_strength=0.3)
    returns = np.diff(np.log(generate_synthetic_bars(cfg)["close"].to_numpy()))
    assert np.corrcoef(returns[:-1], returns[1:])[0, 1] == pytest.approx(0.3, abs=0.05)


def test_oracle_earns_a_clearly_positive_return_on_a_strong_signal() -> None:
    bars = generate_synthetic_bars(SyntheticConfig(seed=5, n_bars=N_BARS, signal_strength=0.3))
    pnl = _oracle_log_returns(bars, 0.3)
    assert pnl.sum() > 0.5  # > +65% before costs over ~1 year of hourly bars
    assert _t_stat(pnl) > 10


def test_oracle_earns_about_nothing_without_a_signal() -> None:
    bars = generate_synthetic_bars(SyntheticConfig(seed=5, n_bars=N_BARS, signal_strength=0.0))
    assert not oracle_positions(bars, 0.0).any()  # it knows there is nothing: stays flat
    pnl = _oracle_log_returns(bars, 0.3)  # trading a signal that is not there
    assert abs(_t_stat(pnl)) < 4
    assert abs(pnl.sum()) < 0.2


def test_oracle_decides_from_the_current_bar_only() -> None:
    bars = generate_synthetic_bars(SyntheticConfig(seed=6, n_bars=300, signal_strength=-0.3))
    full = oracle_positions(bars, -0.3)
    np.testing.assert_array_equal(full[:200], oracle_positions(bars.iloc[:200], -0.3))
    assert full[0] == 0 and set(np.unique(full)) <= {-1, 0, 1}


@pytest.mark.parametrize("regime", ["trend", "mean_reversion", "random_walk"])
def test_each_regime_alone_generates_valid_bars(regime: str) -> None:
    cfg = SyntheticConfig(seed=0, n_bars=1000, regimes=(regime,), segment_bars=(100, 200))
    bars = generate_synthetic_bars(cfg)
    assert len(bars) == 1000 and np.isfinite(bars.to_numpy()).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"regimes": ("trend", "chop")}, "regimes must be a non-empty subset of ('trend'"),
        ({"signal_strength": 1.0}, "signal_strength must lie in (-1, 1)"),
        ({"segment_bars": (50, 10)}, "segment_bars must be (min, max)"),
        ({"volatility": 0.0}, "volatility must be > 0"),
        ({"timeframe": "hourly"}, "timeframe must be a positive count and a unit"),
    ],
)
def test_invalid_synthetic_config_is_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        SyntheticConfig(**kwargs)
    assert message in str(info.value)
