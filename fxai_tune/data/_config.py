"""`DataConfig`: where the bars come from and how they are split and featurised."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fxai_tune.data._loaders import (
    DEFAULT_OUTLIER_MULTIPLE,
    EPOCH_UNITS,
    FORMATS,
    check_loader_options,
)
from fxai_tune.data._pairs import split_pair
from fxai_tune.data._sample import SAMPLE_PRICE_SIDE, SAMPLE_SYMBOL
from fxai_tune.data._synthetic import SyntheticConfig
from fxai_tune.data._timeframes import parse_timeframe

__all__ = ["PRICE_SIDES", "SOURCES", "SPREAD_UNITS", "DataConfig"]

SPREAD_UNITS = ("price", "pips", "points")
"""Units a file's spread column may be in: price units, pips (`resolved_pip_size`) or points
(a tenth of a pip, the last digit of a 5-digit quote)."""

SOURCES = ("sample", "synthetic")
"""Named sources; any other ``source`` is a file path."""

PRICE_SIDES = ("ask", "bid", "mid")


@dataclass
class DataConfig:
    """Market data settings (`DataManager`)."""

    source: str = "sample"
    """``"sample"`` (shipped EUR/USD 1h ASK bars of 2017), ``"synthetic"`` or a file path."""
    format: str = "auto"
    """File format: ``auto``, ``dukascopy``, ``histdata``, ``csv``, ``parquet`` or ``dbn``."""
    columns: dict[str, str] | None = None
    """CSV/Parquet column map, ours -> the file's (``{"timestamp": "Date", "close": "Last"}``)."""
    timestamp_format: str | None = None
    """strftime format of the file's timestamps, or s/ms/us/ns for epoch numbers; None infers."""
    symbol: str | None = None
    """Currency pair, base then quote, e.g. ``EURUSD`` or ``USD/JPY``: sets the default pip size
    and the currency of the P&L (converted to ``env.account_currency``). None: EURUSD for the
    sample and synthetic sources; a file's pair stays undeclared and the environment refuses
    it (it cannot tell the currency of the P&L)."""
    conversion_source: str | None = None
    """File of a second pair's bars (read with the same format options) whose closes convert
    the quote currency into the account currency when it is neither side of ``symbol``
    (EURGBP for a USD account: a GBPUSD or USDGBP file); None: no conversion series."""
    conversion_symbol: str | None = None
    """Pair of ``conversion_source`` (e.g. ``GBPUSD``); required with it."""
    pip_size: float | None = None
    """Price of one pip; None: 0.01 for JPY pairs, else 0.0001 (synthetic: its own pip_size)."""
    price_side: str | None = None
    """Quote of the prices: ``ask``, ``bid`` or ``mid``; None: ask (sample), mid (synthetic),
    bid (files)."""
    spread_unit: str | None = None
    """Unit of a file's ``spread`` column: ``price``, ``pips`` or ``points`` (pip / 10); None:
    a file with a spread column is refused (points read as price would be 10,000x wrong)."""
    other_side_source: str | None = None
    """File of the other side's bars (the ASK file for a BID ``source``, or the reverse, as
    Dukascopy exports them; same format options): the spread of each bar is the difference of
    the two opens (the fill price). Needs ``price_side`` ``ask`` or ``bid``."""
    timeframe: str | None = None
    """Base timeframe (``"1h"``); None detects it from the median bar spacing. A coarser one than
    the data's resamples the bars."""
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """Shares of the series for train, val and test (used unless split dates are set)."""
    val_start: str | None = None
    """First time of the validation split (UTC); set with ``test_start`` to split by date."""
    test_start: str | None = None
    """First time of the test split (UTC); set with ``val_start`` to split by date."""
    volatility_window: int = 24
    """Bars in the rolling volatility feature (per timeframe)."""
    session_features: bool = False
    """Append Tokyo, London and New York session columns (share of the bar each session is
    open, local time with daylight saving) to the UTC time-of-day features; changes the
    observation width from 8 to 11 features."""
    clip: float = 10.0
    """Normalised features are clipped to [-clip, clip]."""
    periods_per_year: float | None = None
    """Base bars per trading year for annualising; None: counted on the FX calendar of the bars
    (median bars per trading day x 260; 6,240 for round-the-clock hourly bars)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """Generator settings when ``source == "synthetic"``."""
    timezone: str | None = None
    """IANA zone of naive file timestamps (``Europe/Zurich``); None: UTC, HistData: EST (UTC-5,
    no DST), a ``Local time`` column: refused. Stamps with a UTC offset keep theirs."""
    outliers: str = "error"
    """Bars with an impossible price (NaN, inf, <= 0) or a spike: ``error`` or ``drop``
    (dropped bars are logged with their count and lines)."""
    outlier_multiple: float | None = DEFAULT_OUTLIER_MULTIPLE
    """A price this many robust volatilities from the closes around it is a spike; None: off."""
    n_folds: int | None = None
    """Walk-forward folds over the train + val region (None: the plain train/val split); with
    ``fold`` set, the ``train`` and ``val`` splits are that fold's windows. The test split is
    the same either way and never part of a fold."""
    fold: int = 0
    """Which walk-forward fold (0 = earliest) serves train and val when ``n_folds`` is set."""
    embargo_bars: int = 0
    """Extra bars left out between a fold's train and val windows, beyond the lookback."""

    @property
    def resolved_symbol(self) -> str | None:
        """``symbol``, or the source's: EURUSD for the sample and synthetic bars, else None."""
        if self.symbol is not None:
            return self.symbol
        return SAMPLE_SYMBOL if self.source in SOURCES else None

    @property
    def resolved_pip_size(self) -> float:
        """``pip_size``, or the source's: the generator's, 0.01 for JPY pairs, else 0.0001."""
        if self.pip_size is not None:
            return float(self.pip_size)
        if self.source == "synthetic":
            return float(self.synthetic.pip_size)
        return 0.01 if "JPY" in (self.symbol or "").upper() else 0.0001

    @property
    def resolved_price_side(self) -> str:
        """``price_side``, or the source's: ask for the sample, mid for synthetic, else bid."""
        if self.price_side is not None:
            return self.price_side
        return {"sample": SAMPLE_PRICE_SIDE, "synthetic": "mid"}.get(self.source, "bid")

    def __post_init__(self) -> None:
        if isinstance(self.synthetic, Mapping):
            self.synthetic = SyntheticConfig(**self.synthetic)
        if not isinstance(self.synthetic, SyntheticConfig):
            raise TypeError(f"synthetic must be a SyntheticConfig; got {type(self.synthetic)}")
        if self.source not in SOURCES and not Path(self.source).is_file():
            raise ValueError(
                f"source must be one of {SOURCES} or an existing file; got source={self.source!r}"
            )
        if self.symbol is not None:
            split_pair(self.symbol)
        if (self.conversion_source is None) != (self.conversion_symbol is None):
            raise ValueError(
                "set conversion_source and conversion_symbol together (a file of the pair that "
                f"converts the quote currency, e.g. GBPUSD), got conversion_source="
                f"{self.conversion_source!r}, conversion_symbol={self.conversion_symbol!r}"
            )
        if self.conversion_source is not None:
            split_pair(self.conversion_symbol, name="conversion_symbol")
            if not Path(self.conversion_source).is_file():
                raise ValueError(f"conversion_source must be an existing file, got "
                                 f"conversion_source={self.conversion_source!r}")
        if self.spread_unit is not None and self.spread_unit not in SPREAD_UNITS:
            raise ValueError(f"spread_unit must be one of {SPREAD_UNITS} or None; got "
                             f"spread_unit={self.spread_unit!r}")
        if self.other_side_source is not None:
            if self.price_side not in ("ask", "bid"):
                raise ValueError(
                    "other_side_source gives the spread against the source's side: set "
                    f"price_side to 'ask' or 'bid' (the source's); got "
                    f"price_side={self.price_side!r}")
            if not Path(self.other_side_source).is_file():
                raise ValueError(f"other_side_source must be an existing file, got "
                                 f"other_side_source={self.other_side_source!r}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}; got format={self.format!r}")
        if self.columns is not None:
            self.columns = {str(k): str(v) for k, v in dict(self.columns).items()}
        if self.timestamp_format is not None and not (
            self.timestamp_format in EPOCH_UNITS or "%" in self.timestamp_format
        ):
            raise ValueError(
                f"timestamp_format must be a strftime format (with %) or one of {EPOCH_UNITS}; "
                f"got timestamp_format={self.timestamp_format!r}"
            )
        check_loader_options(
            timezone=self.timezone, outliers=self.outliers, outlier_multiple=self.outlier_multiple
        )
        # pip_size and price_side stay None when not given and are derived from the source
        # when read (`resolved_*`): a structured config instantiates the defaults once, so
        # deriving them here would freeze the sample's values into every other source.
        if self.pip_size is not None and not self.pip_size > 0:
            raise ValueError(f"pip_size must be > 0; got pip_size={self.pip_size!r}")
        if self.price_side is not None and self.price_side not in PRICE_SIDES:
            raise ValueError(
                f"price_side must be one of {PRICE_SIDES}; got price_side={self.price_side!r}"
            )
        if self.timeframe is not None:
            parse_timeframe(self.timeframe)
        fractions = tuple(float(f) for f in self.split_fractions)
        self.split_fractions = fractions  # type: ignore[assignment]
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(
                "split_fractions must be three positive shares (train, val, test) summing to 1; "
                f"got split_fractions={fractions!r}"
            )
        if (self.val_start is None) != (self.test_start is None):
            raise ValueError(
                "set both val_start and test_start to split by date, or neither; got "
                f"val_start={self.val_start!r}, test_start={self.test_start!r}"
            )
        if self.val_start is not None:
            try:
                val, test = pd.Timestamp(self.val_start), pd.Timestamp(self.test_start)
            except ValueError as err:
                raise ValueError(
                    f"val_start and test_start must be timestamps; got val_start="
                    f"{self.val_start!r}, test_start={self.test_start!r}"
                ) from err
            if not val < test:
                raise ValueError(
                    f"val_start must come before test_start; got val_start={self.val_start!r}, "
                    f"test_start={self.test_start!r}"
                )
        if self.n_folds is not None and (
            isinstance(self.n_folds, bool) or not isinstance(self.n_folds, int) or self.n_folds < 1
        ):
            raise ValueError(f"n_folds must be an integer >= 1 or None; got {self.n_folds=}")
        if self.n_folds is not None and not 0 <= self.fold < self.n_folds:
            raise ValueError(
                f"fold must be in [0, n_folds - 1] = [0, {self.n_folds - 1}]; got {self.fold=}"
            )
        if isinstance(self.embargo_bars, bool) or not isinstance(self.embargo_bars, int) or (
            self.embargo_bars < 0
        ):
            raise ValueError(f"embargo_bars must be an integer >= 0; got {self.embargo_bars=}")
        if self.volatility_window < 2:
            raise ValueError(f"volatility_window must be >= 2; got {self.volatility_window=}")
        if not isinstance(self.session_features, bool):
            raise TypeError(
                f"session_features must be True or False; got {self.session_features=}")
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0; got clip={self.clip!r}")
        if self.periods_per_year is not None and not self.periods_per_year > 0:
            raise ValueError(f"periods_per_year must be > 0 or None; got {self.periods_per_year=}")

    @property
    def split_by_date(self) -> bool:
        """Whether the splits are cut at ``val_start`` / ``test_start`` rather than fractions."""
        return self.val_start is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python copy, e.g. for logging hyperparameters."""
        from dataclasses import asdict

        return asdict(self)
