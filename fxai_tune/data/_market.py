"""`MarketData`: the numpy arrays one split hands to the trading environment.

Kept free of pandas and torch so the environment's hot path only touches numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MarketData"]


@dataclass(frozen=True)
class MarketData:
    """Prices and per-timeframe features of one chronological split.

    Arrays cover the whole loaded series (so observation windows may look back before the
    split into the gap that separates it from the previous one); the environment only takes
    decisions at base-bar indices ``start <= t < end - 1`` (a decision at ``t`` fills at
    ``open[t + 1]``).

    Attributes:
        name: Split name (``"train"``, ``"val"``, ``"test"``, ``"fold3/val"`` ...).
        timestamps: Bar open times of the base timeframe, ``datetime64[ns]`` UTC, shape ``(n,)``.
        open: Base-timeframe open prices, float64, shape ``(n,)``.
        high: Base-timeframe high prices.
        low: Base-timeframe low prices.
        close: Base-timeframe close prices.
        price_side: Which quote the prices are: ``"ask"``, ``"bid"`` or ``"mid"``.
        spread: Bid/ask spread per base bar in price units if the source had one, else None.
        hour_of_day: UTC hour of each base bar (int8), for time-dependent spreads.
        features: Timeframe name -> normalised features, float32, shape ``(n_tf, n_features)``.
            The base timeframe is one of them.
        last_complete: Timeframe name -> int64 array of shape ``(n,)``: index into
            ``features[tf]`` of the last bar of that timeframe that is *complete* at the close
            of base bar ``t`` (-1 when none is). For the base timeframe this is ``arange(n)``.
        feature_names: Column names of every ``features[tf]`` array.
        base_timeframe: Name of the base timeframe (e.g. ``"1h"``).
        start: First base-bar index of the split where a decision may be taken.
        end: One past the last base-bar index of the split.
        pip_size: Price of one pip (0.0001 for EUR/USD, 0.01 for JPY pairs).
        periods_per_year: Base bars per trading year, used to annualise Sharpe ratios.
        volatility: Realised volatility of log returns per base bar (rolling, causal), float64,
            shape ``(n,)``; the curriculum uses it to pick calm or volatile episodes.
        symbol: The traded pair (``"EURUSD"``: EUR priced in USD; any form `split_pair`
            reads), or None when not declared (the environment then refuses to trade it: it
            cannot tell the currency of the P&L).
        conversion: Close prices per base bar of ``conversion_symbol``, the pair that converts
            the quote currency into the account currency when it is neither side of
            ``symbol`` (EURGBP for a USD account: GBPUSD or USDGBP), float64 ``(n,)``; None
            when not given.
        conversion_symbol: Pair of ``conversion``.
        feature_bound: Every feature value lies in ``[-feature_bound, feature_bound]`` (the
            normaliser's clip, `DataConfig.clip`); the observation Boxes declare it. Default
            ``inf``: unbounded (hand-made markets).
    """

    name: str
    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    price_side: str
    spread: np.ndarray | None
    hour_of_day: np.ndarray
    features: dict[str, np.ndarray]
    last_complete: dict[str, np.ndarray]
    feature_names: tuple[str, ...]
    base_timeframe: str
    start: int
    end: int
    pip_size: float
    periods_per_year: float
    volatility: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    feature_bound: float = float("inf")
    symbol: str | None = None
    conversion: np.ndarray | None = field(repr=False, default=None)
    conversion_symbol: str | None = None

    @property
    def n_decisions(self) -> int:
        """Number of decision points in the split (each needs a next bar to fill at)."""
        return max(0, self.end - 1 - self.start)

    @property
    def timeframes(self) -> tuple[str, ...]:
        """Timeframe names with features, base first."""
        return tuple(self.features)
