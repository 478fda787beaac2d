"""Typed configuration of the trading environment: costs, reward weights, curriculum, episodes.

Every dataclass validates itself in ``__post_init__`` and raises ``ValueError`` naming the field,
the bad value and what is allowed, so a bad Hydra override fails where it enters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from fxai_tune.data._pairs import check_currency

__all__ = ["CostConfig", "CurriculumEnvConfig", "EnvConfig", "FinancingConfig", "RewardConfig"]

COST_UNITS = ("pips", "price")
SWAP_UNITS = ("points", "pips", "annual_rate")
SWAP_DAYS_PER_YEAR = 360.0
"""Day count of ``annual_rate`` swaps: ACT/360, the money-market convention of most
currencies."""
EPISODE_MODES = ("random", "sequential")


def _check_finite(owner: str, name: str, value: Any, *, low: float | None = None,
                  high: float | None = None, low_open: bool = False) -> float:
    """Return ``value`` as float after checking it is a finite number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}.{name} must be a number, got {name}={value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be finite, got {name}={value!r}")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{owner}.{name} must be {bound}, got {name}={value!r}")
    if high is not None and value > high:
        raise ValueError(f"{owner}.{name} must be <= {high}, got {name}={value!r}")
    return value


def _check_int(owner: str, name: str, value: Any, *, low: int) -> int:
    """Return ``value`` after checking it is an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an int, got {name}={value!r}")
    if value < low:
        raise ValueError(f"{owner}.{name} must be >= {low}, got {name}={value!r}")
    return value


def _check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` after checking it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {list(choices)}, got {name}={value!r}")
    return value


@dataclass
class CostConfig:
    """Transaction costs paid on every change of position (see ``../shared/DOMAIN.md``)."""

    unit: str = "pips"
    """Unit of ``spread`` and ``slippage``: ``"pips"`` (times ``MarketData.pip_size``) or
    ``"price"`` (absolute price units)."""
    spread: float = 0.8
    """Bid/ask spread in ``unit``; half of it is paid per unit traded on each side."""
    spread_from_data: bool = False
    """Use the per-bar ``MarketData.spread`` array (price units) instead of ``spread``; the
    rollover multiplier is then not applied (the data's spread already holds the widening)."""
    rollover_multiplier: float = 3.0
    """Factor that widens the configured spread during ``rollover_hours`` (daily roll)."""
    rollover_hours: list[int] = field(default_factory=lambda: [21, 22])
    """UTC hours of the base bar at which the configured spread is widened."""
    slippage: float = 0.1
    """Adverse fill price move per unit traded, in ``unit``, paid on every change of position."""
    slippage_per_lot: float = 0.0
    """Extra adverse fill price move, in ``unit``, per lot of the order (market impact: the
    cost of an order of ``k`` lots grows as ``k * (slippage + slippage_per_lot * k)``)."""
    slippage_volatility: float = 0.0
    """Extra adverse fill price move as a multiple of the decision bar's realised volatility
    (``MarketData.volatility``, log return per bar) times the fill price."""
    commission_per_lot: float = 0.0
    """Commission per side per lot (``EnvConfig.lot_size`` units), in the account currency."""

    def __post_init__(self) -> None:
        owner = "CostConfig"
        _check_choice(owner, "unit", self.unit, COST_UNITS)
        self.spread = _check_finite(owner, "spread", self.spread, low=0.0)
        if not isinstance(self.spread_from_data, bool):
            raise TypeError(f"{owner}.spread_from_data must be a bool, got "
                            f"spread_from_data={self.spread_from_data!r}")
        self.rollover_multiplier = _check_finite(
            owner, "rollover_multiplier", self.rollover_multiplier, low=0.0, low_open=True)
        hours = list(self.rollover_hours)
        for hour in hours:
            if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
                raise ValueError(f"{owner}.rollover_hours must hold UTC hours in 0..23, got "
                                 f"rollover_hours={self.rollover_hours!r}")
        self.rollover_hours = hours
        self.slippage = _check_finite(owner, "slippage", self.slippage, low=0.0)
        self.slippage_per_lot = _check_finite(owner, "slippage_per_lot", self.slippage_per_lot,
                                              low=0.0)
        self.slippage_volatility = _check_finite(
            owner, "slippage_volatility", self.slippage_volatility, low=0.0)
        self.commission_per_lot = _check_finite(
            owner, "commission_per_lot", self.commission_per_lot, low=0.0)

    def to_price(self, value: float, pip_size: float) -> float:
        """Convert ``value`` given in ``unit`` to price units."""
        return value * pip_size if self.unit == "pips" else value


@dataclass
class FinancingConfig:
    """Overnight swap of the traded pair, charged or credited at each daily roll (17:00 New
    York) to the position held through it, three times for Wednesday's roll
    (`fxai_tune.data.rollover_nights`). Not scaled by the curriculum (not a transaction cost).
    """

    unit: str = "points"
    """Unit of ``swap_long`` / ``swap_short`` per unit of the base currency and night:
    ``"points"`` (price points, pip_size / 10, as brokers quote swaps), ``"pips"``
    (``MarketData.pip_size``), both in the quote currency, or ``"annual_rate"`` (fraction of
    the position's notional a year, ACT/360: -0.02 pays 2% a year)."""
    swap_long: float = 0.0
    """Swap of a long position in ``unit``; positive is credited, negative charged."""
    swap_short: float = 0.0
    """Swap of a short position in ``unit``; positive is credited, negative charged."""

    def __post_init__(self) -> None:
        owner = "FinancingConfig"
        _check_choice(owner, "unit", self.unit, SWAP_UNITS)
        self.swap_long = _check_finite(owner, "swap_long", self.swap_long)
        self.swap_short = _check_finite(owner, "swap_short", self.swap_short)


@dataclass
class RewardWeights:
    """Weight of each named reward component (all >= 0).

    Components (raw values are logged in ``info["reward_components"]``): ``pnl`` (log return of
    equity before costs), ``transaction_cost`` (log factor of the costs, <= 0), ``drawdown``
    (minus the increase of drawdown from the running peak), ``inactivity`` (-1 per step flat
    beyond ``inactivity_after``), ``holding`` (-1 per step in a position beyond ``max_holding``)
    and ``differential_sharpe`` (Moody & Saffell's online Sharpe ratio gradient).
    """

    pnl: float = 1.0
    """Weight of the log return of equity before costs."""
    transaction_cost: float = 1.0
    """Weight of the log cost factor; with ``pnl`` at the same weight their sum is the net log
    return of equity."""
    drawdown: float = 0.5
    """Weight of the drawdown penalty (increase of the drawdown fraction this step)."""
    inactivity: float = 0.0
    """Weight of the inactivity penalty (-1 per step flat beyond ``inactivity_after``)."""
    holding: float = 0.0
    """Weight of the holding penalty (-1 per step in a position beyond ``max_holding``)."""
    differential_sharpe: float = 0.0
    """Weight of the differential Sharpe ratio of the net log return; at 0 it is not computed
    (~2.8 us of a 64-env step) and ``info["reward_components"]`` reports it as 0."""

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _check_finite("RewardWeights", f.name,
                                                getattr(self, f.name), low=0.0))


@dataclass
class RewardConfig:
    """Reward = ``scale`` x sum(weight x component), see `RewardWeights` for the components."""

    weights: RewardWeights = field(default_factory=RewardWeights)
    """Weight of each component."""
    scale: float = 100.0
    """Global factor multiplying the weighted sum (log returns per hour are ~1e-4)."""
    dsr_eta: float = 0.01
    """Adaptation rate of the moving moments of the differential Sharpe ratio, in (0, 1)."""
    inactivity_after: int = 48
    """Steps flat allowed before the inactivity penalty starts."""
    max_holding: int = 240
    """Steps in one position allowed before the holding penalty starts."""

    def __post_init__(self) -> None:
        owner = "RewardConfig"
        if isinstance(self.weights, dict):
            self.weights = RewardWeights(**self.weights)
        self.scale = _check_finite(owner, "scale", self.scale, low=0.0, low_open=True)
        self.dsr_eta = _check_finite(owner, "dsr_eta", self.dsr_eta, low=0.0, low_open=True,
                                     high=1.0)
        if self.dsr_eta >= 1.0:
            raise ValueError(f"{owner}.dsr_eta must be in (0, 1), got dsr_eta={self.dsr_eta!r}")
        _check_int(owner, "inactivity_after", self.inactivity_after, low=0)
        _check_int(owner, "max_holding", self.max_holding, low=0)


@dataclass
class CurriculumEnvConfig:
    """How ``set_difficulty(level)`` eases the environment; level 1.0 is the configured env.

    Every quantity moves linearly with the level between its value at 0 and the configured one.
    """

    difficulty: float = 1.0
    """Initial difficulty level in [0, 1]."""
    min_cost_scale: float = 0.0
    """Factor on all transaction costs at difficulty 0 (1.0 at difficulty 1)."""
    min_episode_length: int = 168
    """Episode length (steps, ``"random"`` mode) at difficulty 0, capped at
    ``EnvConfig.episode_length``."""
    min_volatility_quantile: float = 0.5
    """At difficulty 0 random starts are drawn among bars whose ``MarketData.volatility`` is at or
    below this quantile of the split's candidate starts; the quantile rises to 1.0 (every start)
    at difficulty 1."""

    def __post_init__(self) -> None:
        owner = "CurriculumEnvConfig"
        self.difficulty = _check_finite(owner, "difficulty", self.difficulty, low=0.0, high=1.0)
        self.min_cost_scale = _check_finite(owner, "min_cost_scale", self.min_cost_scale,
                                            low=0.0, high=1.0)
        _check_int(owner, "min_episode_length", self.min_episode_length, low=1)
        self.min_volatility_quantile = _check_finite(
            owner, "min_volatility_quantile", self.min_volatility_quantile, low=0.0,
            low_open=True, high=1.0)


@dataclass
class EnvConfig:
    """Observation, actions, account and episodes of the trading environment."""

    windows: dict[str, int] = field(default_factory=lambda: {"1h": 64, "4h": 32, "1d": 8})
    """Timeframe name -> number of last completed bars in that observation branch."""
    position_sizes: list[float] = field(default_factory=lambda: [1.0])
    """Position sizes in lots; actions are the targets [-s_k..-s_1, 0, s_1..s_k] x lot_size."""
    lot_size: float = 100_000.0
    """Units of the base currency per lot (a standard lot is 100,000)."""
    account_currency: str = "USD"
    """Currency of the account (equity, commission, margin): P&L and costs in the pair's quote
    currency are converted at each bar's rate (``docs/env.md``, "Account currency")."""
    initial_equity: float = 100_000.0
    """Starting equity of each episode in the account currency."""
    episode_length: int = 720
    """Steps per episode in ``"random"`` mode (truncated earlier at the split end)."""
    leverage: float = 30.0
    """Notional per unit of margin: a position of notional ``N`` (account currency) uses
    ``N / leverage`` of margin; an order that adds exposure beyond what the equity carries is
    refused. Default 30:1, ESMA's retail limit for major pairs."""
    stop_out_level: float = 0.5
    """Margin level (equity / used margin) below which the position is closed at the price
    where the level is reached (or the open, after a gap) and the episode terminates; in
    (0, 1]. Default 50%, ESMA's retail margin close-out rule."""
    mode: str = "random"
    """``"random"``: episodes start at a random bar of the split (training); ``"sequential"``:
    one deterministic pass over the split (validation / test), cut into one contiguous window
    per env of a vector env so that all windows run as one batch."""
    position_time_scale: float = 100.0
    """Steps in a position that map to 1.0 in the ``portfolio`` time-in-position feature."""
    cost: CostConfig = field(default_factory=CostConfig)
    """Transaction costs."""
    financing: FinancingConfig = field(default_factory=FinancingConfig)
    """Overnight swaps (none by default)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward components and weights."""
    curriculum: CurriculumEnvConfig = field(default_factory=CurriculumEnvConfig)
    """How lower difficulty levels ease the environment."""

    def __post_init__(self) -> None:
        owner = "EnvConfig"
        if not isinstance(self.windows, dict) and hasattr(self.windows, "items"):
            self.windows = dict(self.windows.items())  # e.g. an omegaconf DictConfig
        if not isinstance(self.windows, dict) or not self.windows:
            raise ValueError(f"{owner}.windows must be a non-empty mapping timeframe -> length, "
                             f"got windows={self.windows!r}")
        if "portfolio" in self.windows:
            raise ValueError(f"{owner}.windows may not name a timeframe 'portfolio' (reserved "
                             f"for the portfolio branch), got windows={self.windows!r}")
        for tf, length in self.windows.items():
            if isinstance(length, bool) or not isinstance(length, int) or length < 1:
                raise ValueError(f"{owner}.windows[{tf!r}] must be an int >= 1, got "
                                 f"windows={self.windows!r}")
        sizes = [_check_finite(owner, "position_sizes", s, low=0.0, low_open=True)
                 for s in self.position_sizes]
        if not sizes or len(set(sizes)) != len(sizes):
            raise ValueError(f"{owner}.position_sizes must be non-empty, positive and unique, "
                             f"got position_sizes={self.position_sizes!r}")
        self.position_sizes = sorted(sizes)
        check_currency(owner, "account_currency", self.account_currency)
        self.lot_size = _check_finite(owner, "lot_size", self.lot_size, low=0.0, low_open=True)
        self.initial_equity = _check_finite(owner, "initial_equity", self.initial_equity,
                                            low=0.0, low_open=True)
        _check_int(owner, "episode_length", self.episode_length, low=1)
        self.leverage = _check_finite(owner, "leverage", self.leverage, low=0.0, low_open=True)
        self.stop_out_level = _check_finite(owner, "stop_out_level", self.stop_out_level,
                                            low=0.0, low_open=True, high=1.0)
        _check_choice(owner, "mode", self.mode, EPISODE_MODES)
        self.position_time_scale = _check_finite(
            owner, "position_time_scale", self.position_time_scale, low=0.0, low_open=True)
        for name, cls in (("cost", CostConfig), ("financing", FinancingConfig),
                          ("reward", RewardConfig),
                          ("curriculum", CurriculumEnvConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))
            elif not isinstance(value, cls):
                raise TypeError(f"{owner}.{name} must be a {cls.__name__}, got {name}={value!r}")

    @property
    def n_actions(self) -> int:
        """Number of discrete actions: short sizes, flat, long sizes."""
        return 2 * len(self.position_sizes) + 1

    def target_lots(self) -> list[float]:
        """Target position in lots of each action, ``[-s_k..-s_1, 0, s_1..s_k]``."""
        sizes = list(self.position_sizes)
        return [-s for s in reversed(sizes)] + [0.0] + sizes
