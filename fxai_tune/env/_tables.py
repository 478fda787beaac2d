"""Per-bar lookup tables built once from a `MarketData` so that a step is a few numpy gathers."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fxai_tune.data._market import MarketData
from fxai_tune.data._pairs import split_pair
from fxai_tune.data._timeframes import rollover_nights
from fxai_tune.env._config import SWAP_DAYS_PER_YEAR, EnvConfig

__all__ = ["MarketTables"]

PRICE_SIDES = ("ask", "bid", "mid")

# Observation windows are materialised as one window table, a contiguous row of every window per
# decision bar, when it fits in this many bytes: a step then copies N contiguous rows by one
# np.take (~3.3 us for the default 64 envs, against ~4.7 for an index take plus one take per
# timeframe, and ~5x more for gathering N x window feature rows). Longer data falls back to one
# contiguous (n_bars, window, n_features) array per timeframe that fits, else to the row gather.
MAX_WINDOW_CACHE_BYTES = 512 * 2**20


def pair_currencies(market: MarketData) -> tuple[str, str]:
    """``(base, quote)`` of ``market.symbol``; refuses an undeclared pair."""
    if market.symbol is None:
        raise ValueError(f"MarketData {market.name!r} declares no currency pair (symbol=None), "
                         "so the currency of its P&L is unknown; set DataConfig.symbol, e.g. "
                         "'EURUSD' or 'USDJPY'")
    return split_pair(market.symbol, owner="MarketData")


def conversion_rates(market: MarketData, account: str, mid_close: np.ndarray) -> np.ndarray:
    """Account-currency value of one unit of the quote currency at the close of each bar.

    Direct (quote == account, EURUSD for USD): 1. Inverse (base == account, USDJPY for USD):
    ``1 / mid_close``. Cross (EURGBP for USD): the close of ``market.conversion``, a series of
    quote+account (GBPUSD) or, divided, of account+quote (USDGBP).

    Raises:
        ValueError: When the rate needs a conversion series that is missing or of another pair.
    """
    base, quote = pair_currencies(market)
    n = len(mid_close)
    if quote == account:
        return np.ones(n)
    if base == account:
        return 1.0 / mid_close
    wanted = (quote + account, account + quote)
    if market.conversion is None:
        raise ValueError(f"{market.symbol} P&L is in {quote}; account_currency={account!r} "
                         f"needs a {wanted[0]} or {wanted[1]} rate series: set "
                         "DataConfig.conversion_source and conversion_symbol")
    pair = "".join(split_pair(market.conversion_symbol, owner="MarketData",
                              name="conversion_symbol"))
    if pair not in wanted:
        raise ValueError(f"{market.symbol} P&L in {quote} converts to {account} through "
                         f"{wanted[0]} or {wanted[1]}, got conversion_symbol="
                         f"{market.conversion_symbol!r}")
    closes = np.asarray(market.conversion, dtype=np.float64)
    if closes.shape != (n,) or not np.all(np.isfinite(closes)) or np.any(closes <= 0):
        raise ValueError(f"MarketData.conversion must hold {n} finite prices > 0, got shape "
                         f"{closes.shape}")
    return closes.copy() if pair == wanted[0] else 1.0 / closes


class WindowBlock(NamedTuple):
    """Where one timeframe's window sits in a window-table row."""

    timeframe: str
    start: int
    """First column of the block in a window row."""
    stop: int
    """Column after the block."""
    window: int
    """Bars in the window."""
    features: int
    """Features per bar."""


class MarketTables:
    """Mid prices, per-unit costs and observation windows of one split.

    Prices in ``MarketData`` are the quote side ``price_side``; the mid is the price minus half
    the spread for ask data, plus half for bid data. PnL is marked on mids; every unit traded
    pays half the spread plus slippage (quote currency) plus ``commission_per_lot / lot_size``
    (account currency).

    Attributes:
        base, quote: Currencies of the pair (``MarketData.symbol``).
        mid_open: ``(n,)`` float64 mid open prices.
        mid_close: ``(n,)`` float64 mid close prices.
        mid_high, mid_low: ``(n,)`` float64 mid high and low prices (stop-outs).
        spread: ``(n,)`` float64 spread in price units used for each bar.
        price_cost: ``(n,)`` float64 half spread plus slippage (fixed and volatility-scaled)
            per unit traded at the open of each bar, in price units (quote currency;
            difficulty 1).
        slippage_per_unit_traded: Extra slippage per unit traded and unit of the order's size,
            in price units (``slippage_per_lot`` / ``lot_size``).
        commission_per_unit: Commission per unit traded, in the account currency.
        quote_to_account: ``(n,)`` float64 account-currency value of one unit of the quote
            currency at the close of each bar (`conversion_rates`).
        swap_nights: ``(n,)`` int64 swap nights of a position held from bar ``t - 1`` into
            bar ``t`` (`fxai_tune.data.rollover_nights`).
        swap_long, swap_short: ``(n,)`` float64 swap per unit and night of a long / short
            position held into bar ``t``, in the account currency (positive: credited).
        timeframes: Observation branches, in config order.
        window_index: ``(n_timeframes, n)`` intp; row ``j``, column ``t``: index of the first
            bar of timeframe ``j``'s window at the close of base bar ``t``.
        window_rows: ``(last - first + 1, width)`` float32 window table or None (too long):
            row ``t - first`` holds every window at the close of base bar ``t``, timeframes
            side by side in config order, each ``(window, features)`` flattened.
        windows: Per timeframe ``(n_bars, window, features)`` float32 windows, materialised
            only without the window table and where they fit, else None.
        first: First decision bar with every window complete and inside the split.
        last: Last bar index of the split (``end - 1``); a decision needs ``t < last``.
    """

    def __init__(self, market: MarketData, config: EnvConfig) -> None:
        n = len(market.close)
        for name in ("open", "high", "low", "close", "hour_of_day"):
            if len(getattr(market, name)) != n:
                raise ValueError(f"MarketData.{name} has {len(getattr(market, name))} rows, "
                                 f"close has {n}")
        if market.price_side not in PRICE_SIDES:
            raise ValueError(f"MarketData.price_side must be one of {list(PRICE_SIDES)}, got "
                             f"price_side={market.price_side!r}")
        if not 0 <= market.start < market.end <= n:
            raise ValueError(f"MarketData split must satisfy 0 <= start < end <= {n}, got "
                             f"start={market.start}, end={market.end}")
        if not market.pip_size > 0 or not market.periods_per_year > 0:
            raise ValueError(f"MarketData.pip_size and periods_per_year must be > 0, got "
                             f"pip_size={market.pip_size}, "
                             f"periods_per_year={market.periods_per_year}")
        cost = config.cost
        self.spread = self._spread(market, config)
        half = 0.5 * self.spread
        sign = {"ask": -1.0, "bid": 1.0, "mid": 0.0}[market.price_side]
        self.mid_open = np.asarray(market.open, dtype=np.float64) + sign * half
        self.mid_close = np.asarray(market.close, dtype=np.float64) + sign * half
        self.mid_high = np.asarray(market.high, dtype=np.float64) + sign * half
        self.mid_low = np.asarray(market.low, dtype=np.float64) + sign * half
        self.price_cost = (half + cost.to_price(cost.slippage, market.pip_size)
                           + self._volatility_slippage(market, config))
        self.slippage_per_unit_traded = (cost.to_price(cost.slippage_per_lot, market.pip_size)
                                         / config.lot_size)
        self.commission_per_unit = cost.commission_per_lot / config.lot_size
        self.base, self.quote = pair_currencies(market)
        self.quote_to_account = conversion_rates(market, config.account_currency,
                                                 self.mid_close)
        self.swap_nights = rollover_nights(market.timestamps)
        self.swap_long, self.swap_short = (
            self._swap_per_unit(value, market, config)
            for value in (config.financing.swap_long, config.financing.swap_short))

        self.timeframes = tuple(config.windows)
        self.window_lengths = tuple(config.windows.values())
        available = [tf for tf in market.features if tf in market.last_complete]
        missing = [tf for tf in self.timeframes if tf not in available]
        if missing:
            raise ValueError(f"EnvConfig.windows names timeframes {missing} that the market data "
                             f"lacks; available timeframes: {available}")
        self.features: dict[str, np.ndarray] = {}
        self.window_index = np.zeros((len(self.timeframes), n), dtype=np.intp)
        first = market.start
        for j, (tf, w) in enumerate(config.windows.items()):
            feats = np.ascontiguousarray(market.features[tf], dtype=np.float32)
            lc = np.asarray(market.last_complete[tf], dtype=np.int64)
            if feats.ndim != 2 or lc.shape != (n,):
                raise ValueError(f"MarketData.features[{tf!r}] must be 2-D and "
                                 f"last_complete[{tf!r}] of shape ({n},), got "
                                 f"{feats.shape} and {lc.shape}")
            if np.any(np.diff(lc) < 0) or (n and lc[-1] >= len(feats)):
                raise ValueError(f"MarketData.last_complete[{tf!r}] must be non-decreasing and "
                                 f"index into features[{tf!r}] ({len(feats)} rows)")
            full = lc >= w - 1
            if not full.any():
                raise ValueError(f"EnvConfig.windows[{tf!r}]={w} is longer than the "
                                 f"{int(lc[-1]) + 1} completed {tf} bars of the market data")
            first = max(first, int(np.argmax(full)))
            self.window_index[j] = np.maximum(lc - (w - 1), 0)
            self.features[tf] = feats
        self.first = first
        self.last = market.end - 1
        if self.first >= self.last:
            raise ValueError(
                f"split {market.name!r} has no decision bar with complete observation windows "
                f"{config.windows}: first complete bar {self.first}, split end {market.end}")
        self.n_features = {tf: self.features[tf].shape[1] for tf in self.timeframes}
        layout, stop = [], 0
        for tf, w in zip(self.timeframes, self.window_lengths, strict=True):
            start, stop = stop, stop + w * self.n_features[tf]
            layout.append(WindowBlock(tf, start, stop, w, self.n_features[tf]))
        self._layout: tuple[WindowBlock, ...] = tuple(layout)
        """The timeframes' blocks in a window-table row, side by side in config order."""
        self.window_rows: np.ndarray | None = None
        self.windows: dict[str, np.ndarray | None] = dict.fromkeys(self.timeframes)
        if (self.last - self.first + 1) * stop * 4 <= MAX_WINDOW_CACHE_BYTES:
            self.window_rows = self._window_rows(stop)
        else:
            for tf, w in zip(self.timeframes, self.window_lengths, strict=True):
                feats = self.features[tf]
                if feats.nbytes * w <= MAX_WINDOW_CACHE_BYTES:
                    self.windows[tf] = np.ascontiguousarray(
                        sliding_window_view(feats, w, axis=0).transpose(0, 2, 1))
        self.volatility = np.asarray(market.volatility, dtype=np.float64)
        if self.volatility.size not in (0, n):
            raise ValueError(f"MarketData.volatility must be empty or of shape ({n},), got "
                             f"{self.volatility.shape}")
        self.periods_per_year = float(market.periods_per_year)

    def _volatility_slippage(self, market: MarketData, config: EnvConfig) -> np.ndarray:
        """``slippage_volatility x volatility[t-1] x mid_open[t]``: a fill at the open of bar
        ``t`` slips by a multiple of the volatility known at the decision bar ``t - 1``."""
        multiple = config.cost.slippage_volatility
        if multiple == 0.0:
            return np.zeros(len(self.mid_open))
        volatility = np.asarray(market.volatility, dtype=np.float64)
        if volatility.shape != self.mid_open.shape or not np.all(np.isfinite(volatility)):
            raise ValueError(f"CostConfig.slippage_volatility={multiple} needs a finite "
                             f"MarketData.volatility per bar, got shape {volatility.shape}; "
                             "set slippage_volatility=0")
        return multiple * np.r_[0.0, volatility[:-1]] * self.mid_open

    def _swap_per_unit(self, value: float, market: MarketData, config: EnvConfig
                       ) -> np.ndarray:
        """A ``FinancingConfig`` swap as account currency per unit and night, per bar."""
        unit = config.financing.unit
        if unit == "annual_rate":  # of the notional at the open of the bar
            return value / SWAP_DAYS_PER_YEAR * self.mid_open * self.quote_to_account
        price = value * market.pip_size * (0.1 if unit == "points" else 1.0)
        return price * self.quote_to_account

    @staticmethod
    def _spread(market: MarketData, config: EnvConfig) -> np.ndarray:
        """Spread in price units per base bar."""
        cost = config.cost
        n = len(market.close)
        if cost.spread_from_data:
            if market.spread is None:
                raise ValueError("CostConfig.spread_from_data=True but the market data has no "
                                 "spread column; set spread_from_data=False to use "
                                 "CostConfig.spread")
            spread = np.asarray(market.spread, dtype=np.float64)
            if spread.shape != (n,) or not np.all(np.isfinite(spread)) or np.any(spread < 0):
                raise ValueError("MarketData.spread must be finite, >= 0 and of shape "
                                 f"({n},)")
            return spread.copy()
        spread = np.full(n, cost.to_price(cost.spread, market.pip_size), dtype=np.float64)
        rollover = np.isin(np.asarray(market.hour_of_day), cost.rollover_hours)
        spread[rollover] *= cost.rollover_multiplier
        return spread

    def _window_rows(self, width: int) -> np.ndarray:
        """The window table: row ``t - first`` holds every window at the close of base bar
        ``t`` in ``[first, last]``, timeframes side by side, each ``(window, features)``
        flattened."""
        span = slice(self.first, self.last + 1)
        rows = np.empty((span.stop - span.start, width), dtype=np.float32)
        for j, b in enumerate(self._layout):
            windows = sliding_window_view(self.features[b.timeframe], b.window,
                                          axis=0).transpose(0, 2, 1)
            block = rows[:, b.start:b.stop].reshape(len(rows), b.window, b.features)  # a view
            block[...] = windows[self.window_index[j, span]]
        return rows

    def _split(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Views ``(N, window, features)`` of each timeframe in window-table rows
        ``(N, width)``."""
        n = len(rows)
        return {b.timeframe: rows[:, b.start:b.stop].reshape(n, b.window, b.features)
                for b in self._layout}

    def gather_windows(self, t: np.ndarray) -> dict[str, np.ndarray]:
        """Observation windows at the close of base bars ``t`` (in ``[first, last]``): new float32
        arrays, one per timeframe, of shape ``(len(t), window, n_features)`` (views of one new
        array when the window table is built)."""
        if self.window_rows is not None:
            return self._split(self.window_rows.take(np.subtract(t, self.first), axis=0))
        idx = self.window_index.take(t, axis=1)
        out = {}
        for tf, w, first in zip(self.timeframes, self.window_lengths, idx, strict=True):
            win = self.windows[tf]
            if win is not None:
                out[tf] = win.take(first, axis=0)
            else:
                out[tf] = self.features[tf].take(first[:, None] + np.arange(w), axis=0)
        return out

    def window_gatherer(self, num_envs: int, *, copy: bool = True
                        ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        """:meth:`gather_windows` for exactly ``num_envs`` bars given as rows ``t - first``,
        with its buffers and views made once (the step's hot path).

        With the window table (the default up to ``MAX_WINDOW_CACHE_BYTES``) a call is one
        ``take`` of ``num_envs`` contiguous rows; the windows are views of them, contiguous
        within an env. Without, one ``take`` per timeframe (windows materialised per
        timeframe) or a gather of window rows from the features.

        Args:
            num_envs: Number of bars gathered per call.
            copy: Return new arrays from every call (default); if False, the same arrays
                (in a new dict), overwritten by the next call.
        """
        first = self.first
        table = self.window_rows
        if table is not None:
            split = self._split
            if copy:
                def gather_new(rows: np.ndarray) -> dict[str, np.ndarray]:
                    # "clip": the rows are in range, and it skips the bounds check
                    return split(table.take(rows, 0, None, "clip"))

                return gather_new
            buffer = np.empty((num_envs, table.shape[1]), dtype=np.float32)
            views = split(buffer)

            def gather_into(rows: np.ndarray) -> dict[str, np.ndarray]:
                table.take(rows, 0, buffer, "clip")  # "clip": no temporary copy
                return dict(views)

            return gather_into
        # Fallbacks for data too long for the window table.
        buffers = None if copy else {
            b.timeframe: np.empty((num_envs, b.window, b.features), dtype=np.float32)
            for b in self._layout}
        if any(win is None for win in self.windows.values()):
            gather_windows = self.gather_windows

            def gather_rows(rows: np.ndarray) -> dict[str, np.ndarray]:
                windows = gather_windows(np.add(rows, first))
                if buffers is None:
                    return windows
                for tf, win in windows.items():
                    buffers[tf][...] = win
                return dict(buffers)

            return gather_rows
        idx = np.empty((len(self.timeframes), num_envs), dtype=np.intp)
        window_index = np.ascontiguousarray(self.window_index[:, first:self.last + 1])
        plan = tuple((tf, self.windows[tf], start, None if buffers is None else buffers[tf])
                     for tf, start in zip(self.timeframes, idx, strict=True))

        def gather(rows: np.ndarray) -> dict[str, np.ndarray]:
            window_index.take(rows, axis=1, out=idx, mode="clip")  # "clip": no temporary copy
            obs = {}
            for tf, win, start, buf in plan:
                obs[tf] = win.take(start, 0, buf, "clip")
            return obs

        return gather
