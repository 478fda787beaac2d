"""Overfitting statistics of a whole search, from the per-bar validation returns of its trials.

- Deflated Sharpe Ratio of the best trial (Bailey and López de Prado, 2014): the probability
  that its Sharpe ratio beats the best of ``N`` unskilled trials, given the variance of the
  trials' Sharpe ratios and the skewness, kurtosis and length of the best trial's returns.
- Probability of Backtest Overfitting by combinatorially symmetric cross-validation (Bailey,
  Borwein, López de Prado and Zhu, 2017): how often the trial best on half the bars ranks in
  the bottom half on the other half.

Both read the ``val_returns`` user attribute `score_trial` records on every completed trial;
``docs/statistics.md`` says how to read them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from fxai_tune.stats import (
    OVERFIT_PBO,
    SIGNIFICANT_DSR,
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_per_period,
)
from fxai_tune.tune._scoring import decode_returns

__all__ = ["SIGNIFICANT_DSR", "search_statistics", "statistics_lines"]

MAX_SPLITS = 16


def search_statistics(study: optuna.Study) -> dict[str, Any]:
    """DSR of the best trial and PBO of the search (JSON-ready; values None when undefined).

    ``n_trials`` counts every trial that was scored or pruned: each was a look at the data.
    The trials' return series are compared bar by bar, so only series of the most common
    length (the same validation bars) take part.
    """
    trials = study.get_trials(deepcopy=False)
    tried = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    series = {
        t.number: decode_returns(t.user_attrs["val_returns"])
        for t in trials
        if t.state == TrialState.COMPLETE and "val_returns" in t.user_attrs
    }
    out: dict[str, Any] = {
        "n_trials": len(tried),
        "n_trials_with_returns": 0,
        "best_trial": None,
        "best_sharpe_per_bar": None,
        "deflated_sharpe_ratio": None,
        "expected_max_sharpe_per_bar": None,
        "probability_of_backtest_overfitting": None,
        "pbo_splits": None,
        "note": "",
    }
    if not series:
        out["note"] = "no completed trial recorded validation returns"
        return out
    length = Counter(len(r) for r in series.values()).most_common(1)[0][0]
    series = {n: r for n, r in series.items() if len(r) == length}
    out["n_trials_with_returns"] = len(series)
    best = _best_number(study, series)
    sharpes = np.array([sharpe_per_period(r) for r in series.values()])
    dsr = deflated_sharpe_ratio(series[best], sharpes, n_trials=max(len(tried), len(series)))
    out.update(
        best_trial=best,
        best_sharpe_per_bar=float(dsr.sharpe),
        deflated_sharpe_ratio=float(dsr.dsr),
        expected_max_sharpe_per_bar=float(dsr.expected_max_sharpe),
    )
    splits = _splits(length)
    if len(series) >= 2 and splits is not None:
        matrix = np.column_stack(list(series.values()))
        pbo = probability_of_backtest_overfitting(matrix, n_splits=splits)
        out.update(probability_of_backtest_overfitting=float(pbo.pbo), pbo_splits=splits)
    else:
        out["note"] = "PBO needs >= 2 completed trials with returns over >= 4 bars"
    return out


def _best_number(study: optuna.Study, series: dict[int, np.ndarray]) -> int:
    """The study's best trial (first Pareto trial for several objectives), if it has returns;
    else the best by the first objective among those that do."""
    completed = [t for t in study.get_trials(deepcopy=False) if t.number in series]
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    best = max(completed, key=lambda t: sign * t.values[0])
    if len(study.directions) == 1 and study.best_trial.number in series:
        return study.best_trial.number
    return best.number


def _splits(length: int) -> int | None:
    """Even CSCV split count: 16 (the paper's choice) or fewer for short series (>= 2 bars
    per block)."""
    splits = min(MAX_SPLITS, length // 2)
    splits -= splits % 2
    return splits if splits >= 2 else None


def statistics_lines(stats: dict[str, Any]) -> list[str]:
    """Plain sentences for a terminal or a dashboard note."""
    dsr, pbo = stats["deflated_sharpe_ratio"], stats["probability_of_backtest_overfitting"]
    if dsr is None:
        return [f"overfitting statistics: not available ({stats['note']})"]
    lines = [
        f"Deflated Sharpe Ratio of best trial {stats['best_trial']}: {dsr:.3f} over "
        f"{stats['n_trials']} trials ({'significant' if dsr >= SIGNIFICANT_DSR else 'not significant'}"
        f" at 5%: needs >= {SIGNIFICANT_DSR}; its Sharpe {stats['best_sharpe_per_bar']:.4f}/bar vs "
        f"{stats['expected_max_sharpe_per_bar']:.4f}/bar expected of the best of unskilled trials)",
    ]
    if pbo is None:
        lines.append(f"Probability of Backtest Overfitting: not available ({stats['note']})")
    else:
        lines.append(
            f"Probability of Backtest Overfitting: {pbo:.2f} over "
            f"{stats['n_trials_with_returns']} trials, {stats['pbo_splits']} CSCV blocks "
            f"({'selection worse than chance out of sample' if pbo > OVERFIT_PBO else 'selection holds up better than chance'})"
        )
    if dsr < SIGNIFICANT_DSR:
        lines.append(
            "No edge found: the best validation score is what this many trials of an "
            "unskilled agent would reach by luck."
        )
    return lines
