"""Per-bar trading metrics of one equity curve: returns, risk-adjusted ratios and activity.

Inputs are per-bar NET log returns of equity (after costs) and the position held during each
bar. Ratios (Sharpe, Sortino, max drawdown, Calmar) come from empyrical-reloaded on simple
returns ``expm1(log_return)`` so they match the library everyone else quotes; what empyrical
leaves undefined (no variance, no downside, no drawdown, too few bars) is reported as 0.0, so
every value is a finite float that an optimiser or a JSON log can take as is.
"""

from __future__ import annotations

import math

import empyrical
import numpy as np

__all__ = ["TRADING_METRIC_KEYS", "sharpe_per_period", "trading_metrics"]

TRADING_METRIC_KEYS: tuple[str, ...] = (
    "log_return",
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "turnover",
    "trades",
    "exposure",
)
"""Keys of `trading_metrics`, in the order it returns them."""


def as_finite_1d(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as a 1-D float64 array; ValueError if it is not 1-D or holds NaN/inf."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per bar), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(
            f"{name}[{bad}] is {array[bad]}; every value must be finite (no NaN or inf)"
        )
    return array


def check_periods_per_year(periods_per_year: float) -> float:
    """``periods_per_year`` as a float; ValueError unless it is finite and > 0."""
    value = float(periods_per_year)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"periods_per_year is {periods_per_year!r}; it must be a finite number > 0 "
            "(bars per year, e.g. 252 for daily or ~6200 for hourly FX)"
        )
    return value


def _finite(value: float) -> float:
    """``value`` as a float, 0.0 where it is NaN or +-inf (undefined or overflowed)."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def annualised_sharpe(simple_returns: np.ndarray, periods_per_year: float) -> float:
    """empyrical's annualised Sharpe (risk-free 0, ddof=1); 0.0 for < 2 bars or a constant
    series, which empyrical would report as NaN or +-inf."""
    if simple_returns.size < 2 or np.ptp(simple_returns) == 0.0:
        return 0.0
    with np.errstate(all="ignore"):
        return _finite(empyrical.sharpe_ratio(simple_returns, annualization=periods_per_year))


def sharpe_per_period(returns: np.ndarray, axis: int = 0) -> np.ndarray | float:
    """Per-period (non-annualised) Sharpe ratio ``mean / std(ddof=1)`` along ``axis``.

    This is the Sharpe the Deflated Sharpe Ratio and PBO work in: compute the trials'
    ``trial_sharpes`` with it. An annualised Sharpe is this times ``sqrt(periods_per_year)``.
    Series with fewer than 2 values or no variance (a flat policy) give 0.0, not NaN or inf.

    Returns:
        A float for 1-D input, else an array with ``axis`` removed.
    """
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError(f"returns must have at least 1 dimension, got the scalar {x!r}")
    n = x.shape[axis]
    if n < 2:
        out = np.zeros(np.delete(x.shape, axis))
    else:
        mean = x.mean(axis=axis)
        std = x.std(axis=axis, ddof=1)
        varies = np.ptp(x, axis=axis) > 0.0
        with np.errstate(all="ignore"):
            out = np.where(varies & (std > 0.0), mean / np.where(varies, std, 1.0), 0.0)
    return float(out) if x.ndim == 1 else out


def trading_metrics(
    log_returns: np.ndarray, positions: np.ndarray, periods_per_year: float
) -> dict[str, float]:
    """Return, risk and activity metrics of one backtest, all finite floats.

    Conventions (see ``docs/statistics.md``):

    - ``log_return``: sum of the per-bar net log returns; ``total_return``: ``exp(sum) - 1``.
    - ``sharpe``, ``sortino``, ``calmar``: annualised with ``periods_per_year`` by empyrical on
      simple returns, risk-free rate / required return 0. Undefined values are 0.0: Sharpe of
      fewer than 2 bars or of a constant series, Sortino without a losing bar, Calmar without a
      drawdown (or whose annualised return overflows on a very short series).
    - ``max_drawdown``: largest peak-to-trough fall of equity as a POSITIVE fraction (0.12 is a
      12% drawdown; lower is better; 0.0 if equity never falls). The peak includes the
      starting equity, so a loss on the first bar is a drawdown.
    - ``turnover``: mean over bars of ``|position[t] - position[t-1]|``, starting flat
      (``position[-1] = 0``), in the units of ``positions``.
    - ``trades``: bars where the position changes to a non-zero value (opening, flipping or
      resizing); going flat is not counted.
    - ``exposure``: fraction of bars with a non-zero position.

    A flat policy (all positions 0, returns 0) gives 0.0 for every key. Positions are compared
    with 0 exactly, so pass exact lots or exposures, not noisy floats.

    Args:
        log_returns: Per-bar net log returns of equity, after costs.
        positions: Per-bar position held during the bar (signed lots or exposure), same length.
        periods_per_year: Bars per year, for annualisation.

    Returns:
        ``{key: value}`` for every key of `TRADING_METRIC_KEYS`, in that order.
    """
    r = as_finite_1d("log_returns", log_returns)
    p = as_finite_1d("positions", positions)
    if r.size != p.size:
        raise ValueError(
            f"log_returns has {r.size} bars but positions has {p.size}; pass one position per "
            "bar (the position held during that bar)"
        )
    ppy = check_periods_per_year(periods_per_year)
    if r.size == 0:
        return dict.fromkeys(TRADING_METRIC_KEYS, 0.0)

    simple = np.expm1(r)
    log_return = float(r.sum())
    with np.errstate(all="ignore"):
        sortino = _finite(empyrical.sortino_ratio(simple, annualization=ppy))
        max_drawdown = _finite(-empyrical.max_drawdown(simple)) + 0.0  # + 0.0: no -0.0
        calmar = _finite(empyrical.calmar_ratio(simple, annualization=ppy))
        total_return = _finite(np.expm1(log_return))

    change = np.diff(p, prepend=0.0)
    return {
        "log_return": log_return,
        "total_return": total_return,
        "sharpe": annualised_sharpe(simple, ppy),
        "sortino": sortino,
        "max_drawdown": max_drawdown,
        "calmar": calmar,
        "turnover": float(np.abs(change).mean()),
        "trades": float(np.count_nonzero((change != 0.0) & (p != 0.0))),
        "exposure": float(np.count_nonzero(p) / p.size),
    }
