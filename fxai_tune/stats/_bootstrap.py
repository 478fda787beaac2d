"""Bootstrap confidence intervals for the Sharpe ratio or total return of one equity curve.

Bar returns are autocorrelated (volatility clusters, positions held for many bars), so an
i.i.d. bootstrap understates the uncertainty; the stationary bootstrap of Politis & Romano
(1994) resamples blocks of random (geometric) length instead, via ``arch.bootstrap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from arch.bootstrap import StationaryBootstrap, optimal_block_length

from fxai_tune.stats._metrics import annualised_sharpe, as_finite_1d, check_periods_per_year

__all__ = ["BOOTSTRAP_STATISTICS", "ConfidenceInterval", "bootstrap_confidence_interval"]

BOOTSTRAP_STATISTICS: tuple[str, ...] = ("sharpe", "total_return")
"""Statistics `bootstrap_confidence_interval` can bound."""

Statistic = Literal["sharpe", "total_return"]


@dataclass(frozen=True)
class ConfidenceInterval:
    """A two-sided bootstrap confidence interval; unpacks as ``low, high = interval``.

    Attributes:
        low: Lower bound.
        high: Upper bound.
        confidence: Coverage, e.g. 0.95.
        block_length: Mean block length of the stationary bootstrap, in bars.
        n_resamples: Bootstrap resamples drawn (0 when the series is constant and the interval
            is the point ``(estimate, estimate)``).
        statistic: ``"sharpe"`` or ``"total_return"``.
        estimate: The statistic on the original series.
    """

    low: float
    high: float
    confidence: float
    block_length: float
    n_resamples: int
    statistic: str
    estimate: float

    def __iter__(self) -> Iterator[float]:
        yield self.low
        yield self.high


def _statistic_function(
    statistic: str, periods_per_year: float
) -> Callable[[np.ndarray], float]:
    if statistic == "sharpe":
        return lambda log_returns: annualised_sharpe(np.expm1(log_returns), periods_per_year)
    if statistic == "total_return":
        return lambda log_returns: float(np.expm1(log_returns.sum()))
    raise ValueError(f"statistic is {statistic!r}; valid: {', '.join(BOOTSTRAP_STATISTICS)}")


def bootstrap_confidence_interval(
    log_returns: np.ndarray,
    statistic: Statistic,
    periods_per_year: float,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    block_length: float | None = None,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile confidence interval of a statistic by the stationary bootstrap.

    ``"sharpe"`` is the annualised Sharpe of `trading_metrics` (empyrical on simple returns,
    0.0 for a constant resample); ``"total_return"`` is ``exp(sum(log_returns)) - 1`` over a
    resample as long as the series. The default mean block length is the Politis & White
    (2004) optimum for the stationary bootstrap (``arch.bootstrap.optimal_block_length``,
    Patton, Politis & White 2009 correction) of ``log_returns``, at least 1 bar. The same
    ``seed`` gives the same interval. A constant series (e.g. a flat policy, all zeros) has no
    sampling uncertainty: the interval is ``(estimate, estimate)`` without resampling.

    Args:
        log_returns: Per-bar net log returns of equity, at least 2.
        statistic: ``"sharpe"`` or ``"total_return"``.
        periods_per_year: Bars per year, for the Sharpe's annualisation.
        confidence: Two-sided coverage in (0, 1).
        n_resamples: Bootstrap resamples, >= 10.
        block_length: Mean block length in bars (>= 1); default the optimal one (see above).
        seed: Seed of the bootstrap's random generator.
    """
    r = as_finite_1d("log_returns", log_returns)
    if r.size < 2:
        raise ValueError(f"log_returns has {r.size} values; a bootstrap needs at least 2")
    ppy = check_periods_per_year(periods_per_year)
    func = _statistic_function(statistic, ppy)
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence is {confidence!r}; it must be in (0, 1), e.g. 0.95")
    if int(n_resamples) != n_resamples or n_resamples < 10:
        raise ValueError(f"n_resamples is {n_resamples!r}; it must be an integer >= 10")
    if block_length is not None and not (math.isfinite(block_length) and block_length >= 1):
        raise ValueError(f"block_length is {block_length!r}; it must be >= 1 bar (or None)")

    estimate = func(r)
    if np.ptp(r) == 0.0:
        length = 1.0 if block_length is None else float(block_length)
        return ConfidenceInterval(
            estimate, estimate, confidence, length, 0, statistic, estimate
        )
    if block_length is None:
        optimal = float(optimal_block_length(r)["stationary"].iloc[0])
        block_length = max(1.0, optimal) if math.isfinite(optimal) else 1.0
    bootstrap = StationaryBootstrap(block_length, r, seed=seed)
    low, high = bootstrap.conf_int(
        lambda x: np.array([func(x)]),
        reps=int(n_resamples),
        method="percentile",
        size=confidence,
    )[:, 0]
    return ConfidenceInterval(
        float(low),
        float(high),
        float(confidence),
        float(block_length),
        int(n_resamples),
        statistic,
        estimate,
    )
