"""Performance and selection-bias statistics for backtests and hyperparameter searches.

- `trading_metrics`: return, risk and activity metrics of one equity curve
  (keys `TRADING_METRIC_KEYS`); `sharpe_per_period`: the non-annualised Sharpe.
- `deflated_sharpe_ratio`, `probabilistic_sharpe_ratio`, `expected_max_sharpe`: is the best
  trial's Sharpe more than the luck of N trials (Bailey & López de Prado 2014)?
- `probability_of_backtest_overfitting`: does picking the in-sample best trial work out of
  sample (CSCV, Bailey, Borwein, López de Prado & Zhu 2017)?
- `bootstrap_confidence_interval`: stationary-bootstrap interval of a Sharpe or total return.

Conventions and how to read each number: ``docs/statistics.md``. Pure numpy / scipy / pandas
+ empyrical-reloaded + arch: no torch and no other fxai_tune package, so anything can use it.
"""

from __future__ import annotations

from fxai_tune.stats._bootstrap import (
    BOOTSTRAP_STATISTICS,
    ConfidenceInterval,
    bootstrap_confidence_interval,
)
from fxai_tune.stats._metrics import TRADING_METRIC_KEYS, sharpe_per_period, trading_metrics
from fxai_tune.stats._overfitting import (
    OVERFIT_PBO,
    SIGNIFICANT_DSR,
    BacktestOverfitting,
    DeflatedSharpe,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
)

__all__ = [
    "BOOTSTRAP_STATISTICS",
    "OVERFIT_PBO",
    "SIGNIFICANT_DSR",
    "TRADING_METRIC_KEYS",
    "BacktestOverfitting",
    "ConfidenceInterval",
    "DeflatedSharpe",
    "bootstrap_confidence_interval",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "sharpe_per_period",
    "trading_metrics",
]
