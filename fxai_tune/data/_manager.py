"""`DataManager`: loads bars once, builds per-timeframe features and hands out `MarketData`.

The test split has its own accessor, `DataManager.test_market`; ``market("test")`` raises, so
the tuning path cannot read the test split by accident (DOMAIN.md, "Avoiding look-ahead").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fxai_tune.data._config import SPREAD_UNITS, DataConfig
from fxai_tune.data._features import (
    FEATURE_NAMES,
    SESSION_FEATURE_NAMES,
    FeatureNormalizer,
    compute_features,
    resample_bars,
)
from fxai_tune.data._loaders import DataError, load_bars
from fxai_tune.data._market import MarketData
from fxai_tune.data._sample import load_sample
from fxai_tune.data._splits import Split, split_by_date, split_by_fraction, walk_forward_splits
from fxai_tune.data._synthetic import generate_synthetic_bars
from fxai_tune.data._timeframes import (
    calendar_periods_per_year,
    fx_bins,
    infer_timeframe,
    parse_timeframe,
    timeframe_name,
)

__all__ = ["DataManager", "completed_bar_index"]

log = logging.getLogger(__name__)

TUNING_SPLITS = ("train", "val")
"""Splits `DataManager.market` serves; the test split has `DataManager.test_market`."""


def completed_bar_index(
    base_times: pd.DatetimeIndex,
    base_step: pd.Timedelta,
    tf_times: pd.DatetimeIndex,
    tf_step: pd.Timedelta | pd.DatetimeIndex,
) -> np.ndarray:
    """For each base bar ``t``, the index of the last ``tf`` bar complete at its close (-1: none).

    A ``tf`` bar labelled ``T`` closes at ``C`` (``T + tf_step``, or ``tf_step[j]`` when close
    times are given, as `fx_bins` gives them); it is complete at the close of base bar ``t``
    when ``C <= base_times[t] + base_step`` *and* every base bar in it has index ``<= t`` (the
    second condition matters for irregular data and for bars merged into a bin from the
    weekend).

    Args:
        base_times: Base bar open times, increasing.
        base_step: Base bar length.
        tf_times: Open times of the resampled bars (`resample_bars` labels), increasing.
        tf_step: Resampled bar length, or the close time of every resampled bar.

    Returns:
        int64 array of shape ``(len(base_times),)``, non-decreasing.
    """
    base_ns = base_times.as_unit("ns").asi8
    tf_ns = tf_times.as_unit("ns").asi8
    if isinstance(tf_step, pd.DatetimeIndex):
        ends = tf_step.as_unit("ns").asi8
    else:
        ends = tf_ns + tf_step.value
    by_time = np.searchsorted(ends, base_ns + base_step.value, side="right") - 1
    # Last base bar of each tf bin: the one before the next bin's first bar.
    first_member = np.searchsorted(base_ns, tf_ns, side="left")
    last_member = np.append(first_member[1:], len(base_ns)) - 1
    by_members = np.searchsorted(last_member, np.arange(len(base_ns)), side="right") - 1
    return np.minimum(by_time, by_members).astype(np.int64)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class DataManager:
    """Loads the bars of a `DataConfig` once and serves `MarketData` per split.

    Args:
        config: Where the bars come from, how to split and featurise them.
        windows: Timeframe name -> observation window length in bars of that timeframe, e.g.
            ``{"1h": 64, "4h": 32, "1d": 8}``. The base timeframe must be one of them; the
            others must be whole multiples of it. Their names become the ``features`` keys.

    Raises:
        ValueError: When ``windows`` is invalid.
        DataError: When the data are bad or a split has too few bars for the largest window.

    Example:
        >>> dm = DataManager(DataConfig(), windows={"1h": 64, "4h": 32, "1d": 8})
        >>> train = dm.market("train")
        >>> train.features["4h"].shape[1] == len(train.feature_names)
        True
        >>> report_data = dm.test_market()  # once, for the final report
    """

    def __init__(self, config: DataConfig, *, windows: Mapping[str, int]) -> None:
        self.config = config
        log.info("Loading market data from %s", config.source)
        bars = self._load_bars()
        self.source: str = str(bars.attrs.get("source", config.source))
        detected = infer_timeframe(pd.DatetimeIndex(bars.index))
        base = config.timeframe or detected
        base_step, data_step = parse_timeframe(base), parse_timeframe(detected)
        if base_step < data_step or base_step % data_step != pd.Timedelta(0):
            raise DataError(
                f"{self.source}: the bars are {detected} bars; the base timeframe {base!r} must "
                f"be {detected!r} or a whole multiple of it"
            )
        if base_step != data_step:
            bars = resample_bars(bars, base)
        self.bars: pd.DataFrame = bars
        """The raw bars of the base timeframe (UTC index, float64 columns)."""
        self.base_step: pd.Timedelta = base_step
        self.windows: dict[str, int] = self._check_windows(windows, base_step)
        self.base_timeframe: str = next(
            tf for tf in self.windows if parse_timeframe(tf) == base_step
        )
        self.periods_per_year: float = config.periods_per_year or calendar_periods_per_year(
            pd.DatetimeIndex(bars.index)
        )
        """Base bars a year: ``DataConfig.periods_per_year``, else counted on the FX calendar
        of the bars (`calendar_periods_per_year`: bars per trading day x 260)."""
        self.feature_names: tuple[str, ...] = FEATURE_NAMES + (
            SESSION_FEATURE_NAMES if config.session_features else ()
        )
        self.gap: int = self._lookback()
        """Bars between splits: the largest observation window, in base bars."""
        index = pd.DatetimeIndex(bars.index)
        if config.split_by_date:
            self.splits = split_by_date(
                index, val_start=config.val_start, test_start=config.test_start,
                gap=self.gap, min_bars=self.gap, source=self.source,
            )
        else:
            self.splits = split_by_fraction(
                len(bars), fractions=config.split_fractions, gap=self.gap,
                min_bars=self.gap, source=self.source, timestamps=index,
            )
        self.bars_by_timeframe: dict[str, pd.DataFrame] = {}
        self.raw_features: dict[str, pd.DataFrame] = {}
        self.last_complete: dict[str, np.ndarray] = {}
        self._first_member: dict[str, np.ndarray] = {}
        for tf in self.windows:
            tf_bars = bars if tf == self.base_timeframe else resample_bars(bars, tf)
            self.bars_by_timeframe[tf] = tf_bars
            self.raw_features[tf] = compute_features(
                tf_bars, volatility_window=config.volatility_window,
                sessions=config.session_features, bar_length=parse_timeframe(tf),
            )
            tf_index = pd.DatetimeIndex(tf_bars.index)
            closes = (parse_timeframe(tf) if tf == self.base_timeframe
                      else fx_bins(index, tf).closes)
            self.last_complete[tf] = _frozen(
                completed_bar_index(index, base_step, tf_index, closes)
            )
            self._first_member[tf] = np.searchsorted(
                index.as_unit("ns").asi8, tf_index.as_unit("ns").asi8, side="left"
            )
        if config.n_folds is not None:
            self.splits.update(self._fold_splits(config.n_folds, config.fold, config.embargo_bars))
        self._arrays = self._shared_arrays()
        train = self.splits["train"]
        self.normalizers, self._features = self._normalise(train)
        self._cache: dict[str, MarketData] = {}

    # ------------------------------------------------------------------ public accessors

    @property
    def timeframes(self) -> tuple[str, ...]:
        """Timeframe names, base first."""
        return tuple(self.windows)

    def market(self, split: str) -> MarketData:
        """`MarketData` of the ``"train"`` or ``"val"`` split (arrays shared, not copied).

        Raises:
            ValueError: For ``"test"`` (use `test_market`) or an unknown split name.
        """
        if split == "test":
            raise ValueError(
                "market('test') is not served to the tuning path: the test split is read "
                "once, for the final report; call DataManager.test_market() there"
            )
        if split not in TUNING_SPLITS:
            raise ValueError(f"split must be one of {TUNING_SPLITS}; got {split=}")
        return self._market(split)

    def test_market(self) -> MarketData:
        """`MarketData` of the held-out test split, for the final report only (logged once:
        the report runs every policy on the same split)."""
        if "test" not in self._cache:
            log.info("Reading the test split (%s)", self._span(self.splits["test"]))
        return self._market("test")

    def _fold_splits(self, n_folds: int, fold: int, embargo_bars: int) -> dict[str, Split]:
        """Fold ``fold`` of ``n_folds`` walk-forward folds over train + val as the train and val
        splits: purged by the lookback (``gap``) plus ``embargo_bars`` between them."""
        folds = walk_forward_splits(
            self.splits["val"].end, n_folds=n_folds, gap=self.gap + embargo_bars,
            min_bars=self.gap, source=self.source, timestamps=pd.DatetimeIndex(self.bars.index),
        )
        train, val = folds[fold]
        return {"train": Split("train", self.gap, train.end),
                "val": Split("val", val.start, val.end)}

    def summary(self) -> dict[str, Any]:
        """What was loaded and how it is split, for logs and reports."""
        return {
            "source": self.source,
            "n_bars": len(self.bars),
            "base_timeframe": self.base_timeframe,
            "windows": dict(self.windows),
            "gap": self.gap,
            "periods_per_year": self.periods_per_year,
            "splits": {name: self._span(split) for name, split in self.splits.items()},
        }

    # ------------------------------------------------------------------ construction

    def _load_bars(self) -> pd.DataFrame:
        cfg = self.config
        if cfg.source == "sample":
            return load_sample()
        if cfg.source == "synthetic":
            return generate_synthetic_bars(cfg.synthetic)  # spread in price units
        bars = self._load_file(cfg.source)
        where = bars.attrs.get("source", cfg.source)
        if "spread" in bars and cfg.other_side_source is not None:
            raise DataError(f"{where}: the file has a spread column and other_side_source is "
                            "set; give one source of the spread")
        if "spread" in bars:
            if cfg.spread_unit is None:
                raise DataError(
                    f"{where}: the file has a spread column of undeclared unit; set "
                    f"spread_unit to one of {SPREAD_UNITS} (points = pip / 10)")
            pip = cfg.resolved_pip_size
            bars["spread"] *= {"price": 1.0, "pips": pip, "points": pip / 10}[cfg.spread_unit]
        if cfg.other_side_source is not None:
            bars["spread"] = self._other_side_spread(bars, where)
        return bars

    def _load_file(self, path: str) -> pd.DataFrame:
        cfg = self.config
        return load_bars(
            path, format=cfg.format, columns=cfg.columns,
            timestamp_format=cfg.timestamp_format, timezone=cfg.timezone,
            outliers=cfg.outliers, outlier_multiple=cfg.outlier_multiple,
        )

    def _other_side_spread(self, bars: pd.DataFrame, where: str) -> np.ndarray:
        """Ask open minus bid open of every bar, from ``other_side_source``."""
        cfg = self.config
        other = self._load_file(cfg.other_side_source)["open"].reindex(bars.index)
        if other.isna().any():
            missing = bars.index[int(np.flatnonzero(other.isna().to_numpy())[0])]
            raise DataError(f"{cfg.other_side_source}: no bar at {missing}, which {where} "
                            "has; the two sides must hold the same bars")
        ask, bid = (bars["open"], other) if cfg.price_side == "ask" else (other, bars["open"])
        spread = (ask - bid).to_numpy(dtype=np.float64)
        if np.any(spread < 0):
            at = bars.index[int(np.flatnonzero(spread < 0)[0])]
            raise DataError(f"{cfg.other_side_source}: the ask is below the bid at {at}; is "
                            f"price_side={cfg.price_side!r} the side of {where}?")
        return spread

    def _conversion_closes(self, index: pd.DatetimeIndex) -> np.ndarray | None:
        """Closes of ``conversion_source`` at every base bar: the close of its bar opening at
        the same time, else of the last one before (forward-filled)."""
        cfg = self.config
        if cfg.conversion_source is None:
            return None
        bars = self._load_file(cfg.conversion_source)
        closes = bars["close"].reindex(index, method="ffill")
        if closes.isna().any():
            first = index[int(np.flatnonzero(closes.isna().to_numpy())[0])]
            raise DataError(
                f"{cfg.conversion_source}: no {cfg.conversion_symbol} close at or before the "
                f"bar of {first} of {self.source}; the conversion series must start no later "
                f"than the traded pair's (first {cfg.conversion_symbol} bar: {bars.index[0]})"
            )
        return closes.to_numpy(dtype=np.float64).copy()

    @staticmethod
    def _check_windows(windows: Mapping[str, int], base_step: pd.Timedelta) -> dict[str, int]:
        base = timeframe_name(base_step)
        if not isinstance(windows, Mapping) or not windows:
            raise ValueError(
                f"windows must map timeframe names to window lengths, e.g. {{{base!r}: 64}}; "
                f"got {windows=}"
            )
        steps: dict[str, pd.Timedelta] = {}
        for tf, length in windows.items():
            steps[tf] = parse_timeframe(tf)
            if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
                raise ValueError(
                    f"window lengths must be positive ints; got windows[{tf!r}]={length!r}"
                )
        base_keys = [tf for tf, step in steps.items() if step == base_step]
        if len(base_keys) != 1:
            raise ValueError(
                f"windows must hold the base timeframe {base!r} exactly once (the data's bar "
                f"length); got keys {list(windows)}; valid keys are {base!r} and whole "
                f"multiples of it (e.g. {timeframe_name(base_step * 4)!r})"
            )
        for tf, step in steps.items():
            if step < base_step or step % base_step != pd.Timedelta(0):
                raise ValueError(
                    f"window timeframe {tf!r} must be a whole multiple of the base timeframe "
                    f"{base!r}; got keys {list(windows)}"
                )
        if len(set(steps.values())) != len(steps):
            raise ValueError(f"windows names the same timeframe twice; got keys {list(windows)}")
        ordered = sorted(windows, key=lambda tf: (steps[tf] != base_step, steps[tf]))
        return {tf: int(windows[tf]) for tf in ordered}

    def _lookback(self) -> int:
        """Most base bars one observation can touch: ``window`` complete bins of ``ratio`` base
        bars each plus up to ``ratio - 1`` bars of the current, incomplete bin."""
        lookback = 0
        for tf, window in self.windows.items():
            ratio = int(parse_timeframe(tf) / self.base_step)
            lookback = max(lookback, window * ratio + ratio - 1)
        return lookback

    def _shared_arrays(self) -> dict[str, Any]:
        bars = self.bars
        index = pd.DatetimeIndex(bars.index)
        timestamps = index.tz_convert("UTC").tz_localize(None).as_unit("ns").to_numpy()
        base_features = self.raw_features[self.base_timeframe]
        arrays: dict[str, Any] = {
            "timestamps": timestamps,
            "hour_of_day": index.hour.to_numpy().astype(np.int8),
            "volatility": base_features["volatility"].to_numpy(dtype=np.float64).copy(),
            "spread": (
                bars["spread"].to_numpy(dtype=np.float64).copy() if "spread" in bars else None
            ),
        }
        for name in ("open", "high", "low", "close"):
            arrays[name] = bars[name].to_numpy(dtype=np.float64).copy()
        arrays["conversion"] = self._conversion_closes(index)
        return {k: (None if v is None else _frozen(v)) for k, v in arrays.items()}

    def _normalise(
        self, train: Split
    ) -> tuple[dict[str, FeatureNormalizer], dict[str, np.ndarray]]:
        """Normalisers fitted on ``train``'s rows (and its warm-up) of every timeframe, and all
        rows normalised with them."""
        first_row = max(0, train.start - self.gap)
        normalizers, features = {}, {}
        for tf, raw in self.raw_features.items():
            values = raw.to_numpy(dtype=np.float64)
            last = int(self.last_complete[tf][train.end - 1])
            rows = np.arange(len(values))
            fit = (self._first_member[tf] >= first_row) & (rows <= last)
            if not fit.any():
                raise DataError(
                    f"{self.source}: the {train.name!r} split holds no complete {tf} bar to fit "
                    f"the feature normaliser on; use more training data"
                )
            norm = FeatureNormalizer(clip=self.config.clip).fit(values[fit])
            normalizers[tf] = norm
            features[tf] = _frozen(norm.transform(values))
        return normalizers, features

    def _market(self, name: str) -> MarketData:
        if name not in self._cache:
            self._cache[name] = self._make(name, self.splits[name], self._features)
        return self._cache[name]

    def _make(self, name: str, split: Split, features: dict[str, np.ndarray]) -> MarketData:
        a = self._arrays
        return MarketData(
            name=name,
            timestamps=a["timestamps"],
            open=a["open"],
            high=a["high"],
            low=a["low"],
            close=a["close"],
            price_side=self.config.resolved_price_side,
            spread=a["spread"],
            hour_of_day=a["hour_of_day"],
            features=dict(features),
            last_complete=dict(self.last_complete),
            feature_names=self.feature_names,
            base_timeframe=self.base_timeframe,
            start=split.start,
            end=split.end,
            pip_size=self.config.resolved_pip_size,
            periods_per_year=float(self.periods_per_year),
            volatility=a["volatility"],
            feature_bound=float(self.config.clip),
            symbol=self.config.resolved_symbol,
            conversion=a["conversion"],
            conversion_symbol=self.config.conversion_symbol,
        )

    def _span(self, split: Split) -> str:
        index = self.bars.index
        return (
            f"bars {split.start}..{split.end - 1} ({len(split)}), "
            f"{index[split.start]} to {index[split.end - 1]}"
        )
