"""Market data: loaders, the shipped sample, a synthetic generator, features, splits and the
`DataManager` that hands `MarketData` to the trading environment. numpy + pandas only."""

from __future__ import annotations

from fxai_tune.data._config import PRICE_SIDES, SOURCES, DataConfig
from fxai_tune.data._features import (
    FEATURE_NAMES,
    SESSION_FEATURE_NAMES,
    SESSIONS,
    FeatureNormalizer,
    compute_features,
    resample_bars,
)
from fxai_tune.data._loaders import BAR_COLUMNS, FORMATS, DataError, load_bars
from fxai_tune.data._manager import DataManager, completed_bar_index
from fxai_tune.data._market import MarketData
from fxai_tune.data._pairs import check_currency, split_pair
from fxai_tune.data._sample import SAMPLE_PRICE_SIDE, SAMPLE_SYMBOL, load_sample, sample_path
from fxai_tune.data._splits import Split, split_by_date, split_by_fraction, walk_forward_splits
from fxai_tune.data._synthetic import (
    REGIMES,
    SyntheticConfig,
    fx_timestamps,
    generate_synthetic_bars,
    oracle_positions,
)
from fxai_tune.data._timeframes import (
    FX_DAY_CLOSE,
    FxBins,
    calendar_periods_per_year,
    fx_bins,
    infer_timeframe,
    parse_timeframe,
    periods_per_year,
    rollover_nights,
    timeframe_name,
)

__all__ = [
    "BAR_COLUMNS",
    "FEATURE_NAMES",
    "FORMATS",
    "FX_DAY_CLOSE",
    "PRICE_SIDES",
    "REGIMES",
    "SAMPLE_PRICE_SIDE",
    "SAMPLE_SYMBOL",
    "SESSIONS",
    "SESSION_FEATURE_NAMES",
    "SOURCES",
    "DataConfig",
    "DataError",
    "DataManager",
    "FxBins",
    "FeatureNormalizer",
    "MarketData",
    "Split",
    "SyntheticConfig",
    "calendar_periods_per_year",
    "check_currency",
    "completed_bar_index",
    "compute_features",
    "fx_bins",
    "fx_timestamps",
    "generate_synthetic_bars",
    "infer_timeframe",
    "load_bars",
    "load_sample",
    "oracle_positions",
    "parse_timeframe",
    "periods_per_year",
    "resample_bars",
    "rollover_nights",
    "sample_path",
    "split_by_date",
    "split_by_fraction",
    "split_pair",
    "timeframe_name",
    "walk_forward_splits",
]
