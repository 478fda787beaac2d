"""Selection-bias statistics for a hyperparameter search: is the best trial's Sharpe real?

- Probabilistic and Deflated Sharpe Ratio: Bailey & López de Prado (2014), "The Deflated Sharpe
  Ratio: Correcting for Selection Bias, Backtest Overfitting and Non-Normality", Journal of
  Portfolio Management 40(5), 94-107.
- Probability of Backtest Overfitting by combinatorially symmetric cross-validation (CSCV):
  Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest Overfitting",
  Journal of Computational Finance 20(4), 39-69.

Every Sharpe ratio here is PER PERIOD (per bar, not annualised): the formulas scale with the
number of observations T, so mixing an annualised SR with a per-bar T gives nonsense. Convert
with ``SR_bar = SR_annual / sqrt(periods_per_year)`` and ``V_bar = V_annual / periods_per_year``.
Kurtosis is NON-excess (3 for a normal distribution).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from fxai_tune.stats._metrics import as_finite_1d, sharpe_per_period

__all__ = [
    "OVERFIT_PBO",
    "SIGNIFICANT_DSR",
    "BacktestOverfitting",
    "DeflatedSharpe",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
]

EULER_MASCHERONI = float(np.euler_gamma)

SIGNIFICANT_DSR = 0.95
"""DSR at or above which a search's best trial is significant at the 5% level."""
OVERFIT_PBO = 0.5
"""PBO above which picking the in-sample best does worse than chance out of sample."""

_MAX_COMBINATIONS = 1_000_000
"""Refuse CSCV beyond this many IS/OOS splits (S = 24 gives 2.7 million): memory and time."""


def _finite_number(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} is {value!r}; it must be a finite number")
    return number


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """Probability that the true Sharpe exceeds ``sr_benchmark``, given the observed ``sr``.

    PSR = Φ((SR - SR*) · sqrt(T - 1) / sqrt(1 - γ3·SR + (γ4 - 1)/4 · SR²)) (Bailey & López de
    Prado 2014, eq. 9): the estimation error of a Sharpe ratio grows with negative skew and fat
    tails, so the same SR is less convincing from a short or non-normal track record.

    Args:
        sr: Observed per-period (non-annualised) Sharpe ratio.
        sr_benchmark: Per-period Sharpe ratio to beat (0 for "is it positive at all").
        n_obs: Number of return observations T the Sharpe was measured on, >= 2.
        skew: Skewness γ3 of those returns.
        kurtosis: NON-excess kurtosis γ4 of those returns (3 for normal).
    """
    sr = _finite_number("sr", sr)
    sr_benchmark = _finite_number("sr_benchmark", sr_benchmark)
    skew = _finite_number("skew", skew)
    kurtosis = _finite_number("kurtosis", kurtosis)
    if int(n_obs) != n_obs or n_obs < 2:
        raise ValueError(f"n_obs is {n_obs!r}; it must be an integer >= 2 (return observations)")
    radicand = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if radicand <= 0.0:
        raise ValueError(
            f"1 - skew*sr + (kurtosis-1)/4*sr^2 is {radicand:.6g} <= 0 for sr={sr}, skew={skew}, "
            f"kurtosis={kurtosis}: the Sharpe's standard error is undefined; check that sr is "
            "per period (not annualised) and kurtosis is non-excess (normal = 3)"
        )
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(radicand)
    return float(sps.norm.cdf(z))


def expected_max_sharpe(n_trials: float, sharpe_variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios whose true value is 0.

    E[max SR] ≈ sqrt(V) · ((1 - γ) · Φ⁻¹(1 - 1/N) + γ · Φ⁻¹(1 - 1/(N·e))), γ the
    Euler-Mascheroni constant (Bailey & López de Prado 2014, eq. 6): the Sharpe a search of N
    skill-less trials finds by luck alone, the benchmark the DSR must beat. One trial involves
    no selection, so N = 1 gives 0.0.

    Args:
        n_trials: Number of independent trials N, >= 1 (may be fractional: an effective count).
        sharpe_variance: Variance V of the trials' Sharpe ratios, >= 0, in the same units as the
            result (per period for a per-period benchmark).
    """
    n = _finite_number("n_trials", n_trials)
    variance = _finite_number("sharpe_variance", sharpe_variance)
    if n < 1.0:
        raise ValueError(f"n_trials is {n_trials!r}; it must be >= 1")
    if variance < 0.0:
        raise ValueError(f"sharpe_variance is {sharpe_variance!r}; a variance must be >= 0")
    if n == 1.0:
        return 0.0
    quantiles = (1.0 - EULER_MASCHERONI) * sps.norm.ppf(1.0 - 1.0 / n) + (
        EULER_MASCHERONI * sps.norm.ppf(1.0 - 1.0 / (n * math.e))
    )
    return float(math.sqrt(variance) * quantiles)


@dataclass(frozen=True)
class DeflatedSharpe:
    """Result of `deflated_sharpe_ratio`; every Sharpe and variance is per period.

    Attributes:
        dsr: Probability that the best trial's true Sharpe is above what ``n_trials`` lucky
            trials would reach; > 0.95 is significant at the 5% level.
        sharpe: Per-period Sharpe ratio of the best trial's returns.
        expected_max_sharpe: The benchmark SR0 = E[max SR] of ``n_trials`` null trials.
        n_trials: Number of trials N the selection was made from.
        n_obs: Observations T of the best trial's returns.
        skew: Skewness of the best trial's returns.
        kurtosis: Non-excess kurtosis of the best trial's returns (normal = 3).
        sharpe_variance: Variance (ddof=1) of the trials' per-period Sharpe ratios.
    """

    dsr: float
    sharpe: float
    expected_max_sharpe: float
    n_trials: int
    n_obs: int
    skew: float
    kurtosis: float
    sharpe_variance: float


def deflated_sharpe_ratio(
    best_returns: np.ndarray, trial_sharpes: np.ndarray, n_trials: int | None = None
) -> DeflatedSharpe:
    """Deflated Sharpe Ratio of the best trial of a search (Bailey & López de Prado 2014).

    DSR = PSR(SR0) with SR0 = `expected_max_sharpe` (N, V[trial Sharpes]): the PSR of the
    selected trial against the Sharpe that the best of N skill-less trials reaches by luck, so
    it corrects at once for selection among N trials, a short sample and non-normal returns.

    Args:
        best_returns: Per-period returns of the selected trial (at least 2), the same kind of
            returns (e.g. net log returns per bar) the trial Sharpes were computed from. Its
            Sharpe, skewness and (non-excess) kurtosis are the population moments of this
            series; a constant series has Sharpe 0, skew 0 and kurtosis 3.
        trial_sharpes: Per-period (NON-annualised) Sharpe ratios of every trial of the search,
            the best one included, e.g. from `sharpe_per_period`; their variance (ddof=1; 0 for
            a single trial) sets the benchmark. Divide annualised Sharpes by
            ``sqrt(periods_per_year)`` first.
        n_trials: Number of trials N behind the selection, if more were run than
            ``trial_sharpes`` holds (e.g. pruned trials); default ``len(trial_sharpes)``.
    """
    r = as_finite_1d("best_returns", best_returns)
    sharpes = as_finite_1d("trial_sharpes", trial_sharpes)
    if r.size < 2:
        raise ValueError(f"best_returns has {r.size} values; the DSR needs at least 2")
    if sharpes.size < 1:
        raise ValueError("trial_sharpes is empty; pass the Sharpe of every trial of the search")
    n = sharpes.size if n_trials is None else n_trials
    if int(n) != n or n < 1:
        raise ValueError(f"n_trials is {n_trials!r}; it must be an integer >= 1")
    n = int(n)
    if n < sharpes.size:
        raise ValueError(
            f"n_trials is {n} but trial_sharpes holds {sharpes.size} trials; n_trials counts "
            "every trial run, so it cannot be smaller"
        )
    variance = float(np.var(sharpes, ddof=1)) if sharpes.size > 1 else 0.0
    sr = sharpe_per_period(r)
    if np.ptp(r) == 0.0:
        skew, kurtosis = 0.0, 3.0
    else:
        skew = float(sps.skew(r, bias=True))
        kurtosis = float(sps.kurtosis(r, fisher=False, bias=True))
    benchmark = expected_max_sharpe(n, variance)
    return DeflatedSharpe(
        dsr=probabilistic_sharpe_ratio(sr, benchmark, r.size, skew, kurtosis),
        sharpe=sr,
        expected_max_sharpe=benchmark,
        n_trials=n,
        n_obs=int(r.size),
        skew=skew,
        kurtosis=kurtosis,
        sharpe_variance=variance,
    )


@dataclass(frozen=True, eq=False)
class BacktestOverfitting:
    """Result of `probability_of_backtest_overfitting`.

    Attributes:
        pbo: Fraction of IS/OOS splits where the in-sample best trial ranks at or below the
            out-of-sample median (logit <= 0). > 0.5: selecting by in-sample performance does
            worse than picking a trial at random.
        logits: λ_c = log(ω_c / (1 - ω_c)) of every split, ω_c the out-of-sample relative rank
            (rank / (N + 1)) of the in-sample best trial.
        n_splits: Number S of row blocks.
        n_combinations: Number of IS/OOS splits, C(S, S/2).
        n_trials: Number of trials N (columns).
        n_obs: Rows used, a multiple of S (the oldest ``T mod S`` rows are dropped).
        performance_degradation_slope: Least-squares slope of the OOS metric of the IS-best
            trial on its IS metric, across splits; < 0 means stronger in-sample results
            promise weaker out-of-sample ones. 0.0 when the IS metric never varies.
        prob_oos_loss: Fraction of splits where the IS-best trial's OOS metric is < 0.
    """

    pbo: float
    logits: np.ndarray
    n_splits: int
    n_combinations: int
    n_trials: int
    n_obs: int
    performance_degradation_slope: float
    prob_oos_loss: float


def _cscv_sharpes(
    blocks: np.ndarray, is_blocks: np.ndarray, oos_blocks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-period Sharpe of every trial on the IS and OOS rows of every split, vectorised.

    A Sharpe needs only the count, sum and sum of squares of its rows, so each split's
    statistics are sums of per-block sums, not a pass over its rows. Values are shifted by the
    column mean first, which keeps ``sum(x^2) - sum(x)^2 / n`` accurate; exactly constant
    halves (a flat policy) are found by block min/max and get Sharpe 0, as in
    `sharpe_per_period`.
    """
    n_splits, rows_per_block, _ = blocks.shape
    shift = blocks.mean(axis=(0, 1))
    shifted = blocks - shift
    sums = shifted.sum(axis=1)  # S x N
    squares = np.square(shifted).sum(axis=1)
    lows = blocks.min(axis=1)
    highs = blocks.max(axis=1)
    n = rows_per_block * (n_splits // 2)
    out = []
    for half in (is_blocks, oos_blocks):  # C x S/2 block indices
        s1 = sums[half].sum(axis=1)  # C x N
        s2 = squares[half].sum(axis=1)
        low, high = lows[half[:, 0]], highs[half[:, 0]]
        for j in range(1, half.shape[1]):
            low = np.minimum(low, lows[half[:, j]])
            high = np.maximum(high, highs[half[:, j]])
        mean = s1 / n
        var = (s2 - s1 * mean) / (n - 1)
        ok = (high > low) & (var > 0.0)
        out.append(np.where(ok, (mean + shift) / np.sqrt(np.where(ok, var, 1.0)), 0.0))
    return out[0], out[1]


def probability_of_backtest_overfitting(
    returns_matrix: np.ndarray,
    n_splits: int = 16,
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
) -> BacktestOverfitting:
    """Probability of Backtest Overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu 2017).

    The rows (time) are cut into S equal blocks; each of the C(S, S/2) ways to pick half of
    the blocks as in-sample (IS, blocks kept in time order) leaves the other half as
    out-of-sample (OOS). For each split the trial n* with the best IS metric is found (first
    column wins ties), ω = rank of n* among the OOS metrics (1 = worst, ties averaged) / (N+1)
    and λ = log(ω / (1 - ω)). PBO is the fraction of splits with λ <= 0: how often the
    in-sample winner is no better than the median trial out of sample.

    Args:
        returns_matrix: T x N per-period returns, one column per trial, rows in time order
            and aligned across trials (same bars). The oldest ``T mod S`` rows are dropped so
            that every block has ``T // S`` rows.
        n_splits: Even number of blocks S >= 2, at most T; the paper uses 16 (12870 splits).
        metric: Performance of each column of a (rows x N) array, returning N values (higher
            is better); default the per-period Sharpe ratio (`sharpe_per_period`), which is
            vectorised over all splits. A custom metric is called twice per split.
    """
    m = np.asarray(returns_matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(
            f"returns_matrix must be 2-D (T rows of bars x N trial columns), got shape {m.shape}"
        )
    if not np.all(np.isfinite(m)):
        row, col = np.argwhere(~np.isfinite(m))[0]
        raise ValueError(
            f"returns_matrix[{row}, {col}] is {m[row, col]}; every value must be finite"
        )
    n_obs, n_trials = m.shape
    if n_trials < 2:
        raise ValueError(f"returns_matrix has {n_trials} trial column(s); PBO needs at least 2")
    if int(n_splits) != n_splits or n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits is {n_splits!r}; it must be an even integer >= 2")
    n_splits = int(n_splits)
    if n_obs < n_splits:
        raise ValueError(
            f"returns_matrix has {n_obs} rows, fewer than n_splits={n_splits}; each block needs "
            "at least one row, so n_splits must be <= the number of rows"
        )
    n_combinations = math.comb(n_splits, n_splits // 2)
    if n_combinations > _MAX_COMBINATIONS:
        raise ValueError(
            f"n_splits={n_splits} gives {n_combinations} IS/OOS splits, more than "
            f"{_MAX_COMBINATIONS}; use n_splits <= 22 (the paper uses 16)"
        )

    rows_per_block = n_obs // n_splits
    if metric is None and rows_per_block * n_splits // 2 < 2:
        raise ValueError(
            f"returns_matrix has {n_obs} rows: each half of n_splits={n_splits} blocks gets "
            f"{rows_per_block * n_splits // 2} row(s), and a Sharpe ratio needs at least 2"
        )
    used = m[n_obs - rows_per_block * n_splits :]
    blocks = used.reshape(n_splits, rows_per_block, n_trials)
    # itertools.combinations yields sorted tuples, so every half keeps its blocks in time order
    is_blocks = np.array(list(itertools.combinations(range(n_splits), n_splits // 2)))
    is_mask = np.zeros((n_combinations, n_splits), dtype=bool)
    is_mask[np.arange(n_combinations)[:, None], is_blocks] = True
    oos_blocks = np.nonzero(~is_mask)[1].reshape(n_combinations, n_splits // 2)

    if metric is None:
        is_perf, oos_perf = _cscv_sharpes(blocks, is_blocks, oos_blocks)
    else:
        is_perf = np.empty((n_combinations, n_trials))
        oos_perf = np.empty((n_combinations, n_trials))
        for c in range(n_combinations):
            for target, half in ((is_perf, is_blocks[c]), (oos_perf, oos_blocks[c])):
                rows = blocks[half].reshape(-1, n_trials)
                values = np.asarray(metric(rows), dtype=np.float64)
                if values.shape != (n_trials,) or not np.all(np.isfinite(values)):
                    raise ValueError(
                        f"metric returned {values!r}; it must return {n_trials} finite values, "
                        "one per column"
                    )
                target[c] = values

    best = np.argmax(is_perf, axis=1)
    picked = np.arange(n_combinations)
    oos_rank = sps.rankdata(oos_perf, axis=1)[picked, best]
    omega = oos_rank / (n_trials + 1)
    logits = np.log(omega / (1.0 - omega))
    is_best = is_perf[picked, best]
    oos_best = oos_perf[picked, best]
    slope = float(np.polyfit(is_best, oos_best, 1)[0]) if np.ptp(is_best) > 0.0 else 0.0
    return BacktestOverfitting(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        n_splits=n_splits,
        n_combinations=n_combinations,
        n_trials=int(n_trials),
        n_obs=int(used.shape[0]),
        performance_degradation_slope=slope,
        prob_oos_loss=float(np.mean(oos_best < 0.0)),
    )
