"""Resampling, causal features, train-only normalisation and completed-bar index maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxai_tune.data import (
    FEATURE_NAMES,
    DataConfig,
    DataManager,
    FeatureNormalizer,
    compute_features,
    load_sample,
    parse_timeframe,
    resample_bars,
)

WINDOWS = {"1h": 32, "4h": 16, "1d": 5}


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return load_sample()


@pytest.fixture(scope="module")
def manager() -> DataManager:
    return DataManager(DataConfig(), windows=WINDOWS)


def test_resample_aggregates_ohlcv_into_bins_aligned_on_17h_new_york(sample: pd.DataFrame) -> None:
    four = resample_bars(sample, "4h")
    chunk = sample.loc["2017-03-01 02:00":"2017-03-01 05:00"]  # 21:00-01:00 New York (EST)
    bar = four.loc[pd.Timestamp("2017-03-01 02:00", tz="UTC")]
    assert bar["open"] == chunk["open"].iloc[0]
    assert bar["high"] == chunk["high"].max()
    assert bar["low"] == chunk["low"].min()
    assert bar["close"] == chunk["close"].iloc[-1]
    assert bar["volume"] == pytest.approx(chunk["volume"].sum())
    assert ((four.index.tz_convert("America/New_York").hour - 17) % 4 == 0).all()


def test_resample_drops_empty_weekend_bins(sample: pd.DataFrame) -> None:
    daily = resample_bars(sample, "1d")
    assert not (daily.index.day_of_week == 5).any()  # no Saturday bars
    assert daily["close"].notna().all()
    assert len(daily) == 260  # one per trading day (312 with midnight-UTC days)


def test_features_are_causal_truncating_the_future_changes_nothing(sample: pd.DataFrame) -> None:
    full = compute_features(sample, volatility_window=24)
    head = compute_features(sample.iloc[:500], volatility_window=24)
    pd.testing.assert_frame_equal(full.iloc[:500], head)


def test_features_have_expected_columns_and_no_nan(sample: pd.DataFrame) -> None:
    features = compute_features(sample)
    assert tuple(features.columns) == FEATURE_NAMES
    assert np.isfinite(features.to_numpy()).all()
    assert features["log_return"].iloc[0] == 0.0  # warm-up filled with 0
    expected = np.log(sample["close"].iloc[1] / sample["close"].iloc[0])
    assert features["log_return"].iloc[1] == pytest.approx(expected)
    np.testing.assert_allclose(features["tod_sin"] ** 2 + features["tod_cos"] ** 2, 1.0)


def test_normalizer_uses_fitted_statistics_and_clips() -> None:
    train = np.array([[0.0, 5.0], [2.0, 5.0]])
    norm = FeatureNormalizer(clip=3.0).fit(train)
    out = norm.transform(np.array([[1.0, 5.0], [100.0, 6.0]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.0], [3.0, 1.0]])  # constant column: centred only
    clone = FeatureNormalizer()
    clone.load_state_dict(norm.state_dict())
    np.testing.assert_array_equal(clone.transform(train), norm.transform(train))


def test_normalizer_statistics_come_from_the_train_split_only(
    tmp_path: Path, sample: pd.DataFrame
) -> None:
    original = tmp_path / "original.parquet"
    sample.to_parquet(original)
    dm = DataManager(DataConfig(source=str(original)), windows=WINDOWS)
    train_end = dm.splits["train"].end
    changed = sample.copy()
    changed.iloc[train_end:, :4] *= 1.5
    changed.iloc[train_end:, 4] = 1.0
    altered = tmp_path / "altered.parquet"
    changed.to_parquet(altered)
    dm2 = DataManager(DataConfig(source=str(altered)), windows=WINDOWS)
    for tf in WINDOWS:
        np.testing.assert_array_equal(dm.normalizers[tf].mean, dm2.normalizers[tf].mean)
        np.testing.assert_array_equal(dm.normalizers[tf].std, dm2.normalizers[tf].std)
    train_rows = dm.market("train").features["1h"][:train_end]
    np.testing.assert_array_equal(train_rows, dm2.market("train").features["1h"][:train_end])
    assert not np.array_equal(dm.market("val").features["1h"], dm2.market("val").features["1h"])


def test_normalised_train_features_are_centred(manager: DataManager) -> None:
    train = manager.splits["train"]
    rows = manager.market("train").features["1h"][: train.end]
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=0.05)


def test_last_complete_is_arange_for_the_base_timeframe(manager: DataManager) -> None:
    n = len(manager.bars)
    np.testing.assert_array_equal(manager.market("train").last_complete["1h"], np.arange(n))


@pytest.mark.parametrize("tf", ["4h", "1d"])
def test_last_complete_never_exposes_an_incomplete_bar(manager: DataManager, tf: str) -> None:
    """Every exposed bin has ended by the close of base bar t and holds only bars <= t; the next
    bin has not ended yet (or holds a later bar)."""
    base = manager.bars.index.as_unit("ns").asi8
    bins = manager.bars_by_timeframe[tf].index.as_unit("ns").asi8
    step, hour = parse_timeframe(tf).value, parse_timeframe("1h").value
    member = np.searchsorted(bins, base, side="right") - 1  # bin of each base bar
    last_member = np.array([np.flatnonzero(member == j).max() for j in range(len(bins))])
    lc = manager.last_complete[tf]
    assert np.all(np.diff(lc) >= 0)
    for t in range(len(base)):
        j = lc[t]
        if j >= 0:
            assert bins[j] + step <= base[t] + hour and last_member[j] <= t
        if j + 1 < len(bins):
            assert bins[j + 1] + step > base[t] + hour or last_member[j + 1] > t


@pytest.mark.parametrize("tf", ["4h", "1d"])
def test_last_complete_matches_brute_force_resampling_of_the_past(
    manager: DataManager, sample: pd.DataFrame, tf: str
) -> None:
    """Resample only bars <= t and keep the bins that have ended: same bar, same values."""
    step, hour = parse_timeframe(tf), parse_timeframe("1h")
    resampled = manager.bars_by_timeframe[tf]
    lc = manager.last_complete[tf]
    for t in list(range(0, 60)) + list(range(60, len(sample), 97)) + [len(sample) - 1]:
        past = resample_bars(sample.iloc[: t + 1], tf)
        done = past[past.index + step <= sample.index[t] + hour]
        if len(done) == 0:
            assert lc[t] == -1
            continue
        assert resampled.index[lc[t]] == done.index[-1]
        pd.testing.assert_series_equal(
            resampled.iloc[lc[t]], done.iloc[-1], check_names=False
        )
