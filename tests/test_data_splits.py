"""Chronological splits, walk-forward folds, and what `DataManager` hands out per split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fxai_tune.data import (
    DataConfig,
    DataError,
    DataManager,
    MarketData,
    Split,
    SyntheticConfig,
    periods_per_year,
    split_by_date,
    split_by_fraction,
    walk_forward_splits,
)

WINDOWS = {"1h": 64, "4h": 32, "1d": 8}


@pytest.fixture(scope="module")
def manager() -> DataManager:
    return DataManager(DataConfig(), windows=WINDOWS)


def _assert_chronological_with_gap(splits: list[Split], gap: int) -> None:
    for split in splits:
        assert split.end > split.start
    for earlier, later in zip(splits, splits[1:]):
        assert later.start - earlier.end >= gap  # gap bars belong to no split


def test_fraction_splits_are_chronological_disjoint_and_gapped() -> None:
    splits = split_by_fraction(6225, fractions=(0.7, 0.15, 0.15), gap=215)
    ordered = [splits["train"], splits["val"], splits["test"]]
    _assert_chronological_with_gap(ordered, 215)
    assert splits["train"].start == 215  # warm-up before the first decision
    assert splits["test"].end == 6225
    assert splits["val"].start == round(0.7 * 6225)
    covered = np.zeros(6225, dtype=int)
    for split in ordered:
        covered[split.start : split.end] += 1
    assert covered.max() == 1


def test_date_splits_start_at_the_first_bar_on_or_after_each_date(manager: DataManager) -> None:
    index = pd.DatetimeIndex(manager.bars.index)
    splits = split_by_date(index, val_start="2017-09-02", test_start="2017-11-01", gap=10)
    sunday_open = pd.Timestamp("2017-09-03 21:00", tz="UTC")  # 21:00 while the US is on DST
    assert index[splits["val"].start] == sunday_open
    assert index[splits["test"].start - 1] < pd.Timestamp("2017-11-01", tz="UTC")
    assert splits["train"].end == splits["val"].start - 10
    _assert_chronological_with_gap(list(splits.values()), 10)


def test_data_manager_splits_by_date_from_the_config() -> None:
    cfg = DataConfig(val_start="2017-09-01", test_start="2017-11-01")
    dm = DataManager(cfg, windows={"1h": 16})
    assert dm.market("val").timestamps[dm.splits["val"].start] == np.datetime64("2017-09-01")


def test_too_short_split_raises_with_the_split_and_the_need() -> None:
    with pytest.raises(DataError, match=r"the 'val' split has 9 bars, needs at least 20"):
        split_by_fraction(100, fractions=(0.8, 0.1, 0.1), gap=1, min_bars=20)


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.0, 0.0, 0.0)])
def test_invalid_fractions_are_rejected(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="fractions must be three positive shares"):
        split_by_fraction(1000, fractions=fractions, gap=1)


def test_walk_forward_folds_roll_forward_and_keep_the_gap() -> None:
    folds = walk_forward_splits(1000, n_folds=4, gap=10, val_bars=100)
    assert len(folds) == 4
    for i, (train, val) in enumerate(folds):
        assert train.start == 10 and val.start - train.end == 10  # anchored, gapped
        assert len(val) == 100
        if i:
            assert val.start == folds[i - 1][1].end  # rolled forward by one val block
            assert train.end > folds[i - 1][0].end
    assert folds[-1][1].end == 1000


def test_rolling_walk_forward_keeps_the_train_length() -> None:
    folds = walk_forward_splits(1000, n_folds=3, gap=5, val_bars=100, train_bars=300)
    assert [len(train) for train, _ in folds] == [300, 300, 300]
    assert [train.start for train, _ in folds] == [395, 495, 595]


def test_walk_forward_with_too_many_folds_raises() -> None:
    with pytest.raises(DataError, match=r"'fold0/train' split has .* use fewer folds"):
        walk_forward_splits(500, n_folds=3, gap=50, val_bars=150, min_bars=50)


def test_manager_gap_is_the_largest_window_in_base_bars(manager: DataManager) -> None:
    assert manager.gap == 8 * 24 + 23  # 8 complete days plus the current, incomplete one
    splits = [manager.splits[name] for name in ("train", "val", "test")]
    _assert_chronological_with_gap(splits, manager.gap)


def test_market_test_raises_and_points_to_test_market(manager: DataManager) -> None:
    with pytest.raises(ValueError, match=r"test_market\(\)"):
        manager.market("test")
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'val'\)"):
        manager.market("validation")
    test = manager.test_market()
    assert (test.start, test.end) == (manager.splits["test"].start, len(manager.bars))


def test_market_data_follows_the_contract(manager: DataManager) -> None:
    md = manager.market("train")
    n = len(manager.bars)
    assert isinstance(md, MarketData) and md.name == "train"
    assert md.timestamps.dtype == np.dtype("datetime64[ns]") and md.timestamps.shape == (n,)
    assert md.timestamps[0] == np.datetime64("2017-01-01T22:00")
    assert md.timeframes == ("1h", "4h", "1d") and md.base_timeframe == "1h"
    assert md.feature_names == tuple(manager.raw_features["1h"].columns)
    for tf in md.timeframes:
        assert md.features[tf].dtype == np.float32
        assert md.last_complete[tf].shape == (n,)
        assert md.last_complete[tf].max() < len(md.features[tf])
    assert md.price_side == "ask" and md.spread is None
    assert md.pip_size == 0.0001 and md.periods_per_year == 6240.0
    assert md.hour_of_day.dtype == np.int8 and md.hour_of_day[0] == 22
    assert md.volatility.shape == (n,) and (md.volatility >= 0).all()
    assert md.n_decisions == md.end - 1 - md.start


def test_market_data_shares_read_only_arrays_across_splits(manager: DataManager) -> None:
    train, val, test = manager.market("train"), manager.market("val"), manager.test_market()
    for name in ("close", "timestamps", "volatility"):
        assert getattr(train, name) is getattr(val, name) is getattr(test, name)
    assert train.features["4h"] is val.features["4h"]
    with pytest.raises(ValueError, match="read-only"):
        train.close[0] = 1.0


def test_manager_folds_never_reach_the_test_split(manager: DataManager) -> None:
    """The folds trials train on (``n_folds``/``fold``): purged, before the test split."""
    test = manager.splits["test"]
    for fold in range(3):
        folded = DataManager(
            DataConfig(n_folds=3, fold=fold, embargo_bars=4), windows=WINDOWS
        )
        train, val = folded.splits["train"], folded.splits["val"]
        assert val.start - train.end >= manager.gap + 4
        assert val.end <= test.start - manager.gap
        assert folded.splits["test"] == test
        assert folded.market("train").features["1h"] is not manager.market("train").features["1h"]


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ({"4h": 8}, "must hold the base timeframe '1h'"),
        ({"1h": 8, "90m": 4}, "'90m' must be a whole multiple of the base timeframe '1h'"),
        ({"1h": 0}, "window lengths must be positive ints"),
        ({"1h": 8, "2x": 4}, "timeframe must be a positive count and a unit"),
    ],
)
def test_invalid_windows_are_rejected_with_the_valid_choices(
    windows: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        DataManager(DataConfig(), windows=windows)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"price_side": "bidask"}, "price_side must be one of ('ask', 'bid', 'mid')"),
        ({"source": "missing.csv"}, "source must be one of ('sample', 'synthetic') or an"),
        ({"format": "xls"}, "format must be one of"),
        ({"split_fractions": (0.8, 0.3, 0.1)}, "split_fractions must be three positive shares"),
        ({"val_start": "2017-09-01"}, "set both val_start and test_start"),
        ({"timeframe": "1y"}, "timeframe must be a positive count and a unit"),
    ],
)
def test_invalid_data_config_names_the_value_and_the_choices(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        DataConfig(**kwargs)
    assert message in str(info.value)


def test_data_config_derives_pip_size_and_price_side() -> None:
    assert DataConfig().resolved_pip_size == 0.0001
    assert DataConfig().resolved_price_side == "ask"
    assert DataConfig(symbol="USDJPY").resolved_pip_size == 0.01
    assert DataConfig(source="synthetic").resolved_price_side == "mid"


def test_periods_per_year_scales_with_the_timeframe() -> None:
    assert periods_per_year("1h") == 6240.0
    assert periods_per_year("4h") == 1560.0
    assert periods_per_year("15m") == 24960.0


def test_a_coarser_base_timeframe_resamples_the_sample() -> None:
    dm = DataManager(DataConfig(timeframe="4h"), windows={"4h": 16, "1d": 4})
    assert dm.base_timeframe == "4h" and len(dm.bars) == len(dm.bars_by_timeframe["4h"])
    assert dm.periods_per_year == 1560.0


def test_synthetic_source_carries_its_spread() -> None:
    cfg = DataConfig(source="synthetic", synthetic=SyntheticConfig(n_bars=3000, seed=3))
    md = DataManager(cfg, windows={"1h": 32, "4h": 8}).market("val")
    assert md.spread is not None and md.spread.shape == md.close.shape
    assert md.price_side == "mid"
