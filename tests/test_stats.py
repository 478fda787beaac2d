"""fxai_tune.stats: trading metrics against empyrical and hand-computed values; DSR against
the paper's numerical example; PBO against hand-computed cases, a naive reference and its
behaviour on noise and on a real edge; the stationary-bootstrap interval."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import empyrical
import numpy as np
import pytest
from arch.bootstrap import StationaryBootstrap, optimal_block_length
from scipy import stats as sps

from fxai_tune.stats import (
    TRADING_METRIC_KEYS,
    bootstrap_confidence_interval,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_per_period,
    trading_metrics,
)

STATS_DIR = Path(__file__).resolve().parents[1] / "fxai_tune" / "stats"

# ---------------------------------------------------------------------------- layer rule


def test_stats_imports_only_numeric_libraries_and_itself():
    # layer rule: no torch and no other fxai_tune package, so anything may import stats
    allowed = {"__future__", "collections", "dataclasses", "itertools", "math", "typing",
               "numpy", "scipy", "pandas", "empyrical", "arch"}
    for path in sorted(STATS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name == "fxai_tune.stats" or name.startswith("fxai_tune.stats."):
                    continue
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


# ---------------------------------------------------------------------------- trading metrics


def test_activity_metrics_of_a_tiny_series_by_hand():
    positions = np.array([0, 1, 1, 0, -1, -1], dtype=float)
    m = trading_metrics(np.zeros(6), positions, periods_per_year=252)
    assert tuple(m) == TRADING_METRIC_KEYS
    # |dposition| from a flat start: 0, 1, 0, 1, 1, 0 -> mean 3/6
    assert m["turnover"] == pytest.approx(0.5)
    # opens long at bar 1, goes flat at bar 3 (not a trade), opens short at bar 4
    assert m["trades"] == 2.0
    assert m["exposure"] == pytest.approx(4 / 6)


def test_returns_and_drawdown_of_a_tiny_series_by_hand():
    # equity 1 -> 1.1 -> 0.99 -> 0.99 -> 1.089
    log_returns = np.log([1.1, 0.9, 1.0, 1.1])
    m = trading_metrics(log_returns, np.ones(4), periods_per_year=252)
    assert m["log_return"] == pytest.approx(math.log(1.089))
    assert m["total_return"] == pytest.approx(0.089)
    assert m["max_drawdown"] == pytest.approx((1.1 - 0.99) / 1.1)  # positive fraction
    assert m["trades"] == 1.0 and m["turnover"] == pytest.approx(0.25)
    # resizing 1 -> 2 counts as a trade, 2 -> 0 does not
    assert trading_metrics(np.zeros(3), [1.0, 2.0, 0.0], 252)["trades"] == 2.0


def test_first_bar_loss_is_a_drawdown():
    m = trading_metrics(np.log([0.95, 1.0]), np.ones(2), periods_per_year=252)
    assert m["max_drawdown"] == pytest.approx(0.05)


def test_ratios_match_empyrical_on_a_random_series():
    rng = np.random.default_rng(7)
    log_returns = rng.normal(3e-4, 0.01, 750)
    positions = rng.choice([-1.0, 0.0, 1.0], size=750)
    ppy = 6200.0
    m = trading_metrics(log_returns, positions, periods_per_year=ppy)
    simple = np.expm1(log_returns)
    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(simple, annualization=ppy))
    assert m["sortino"] == pytest.approx(empyrical.sortino_ratio(simple, annualization=ppy))
    assert m["max_drawdown"] == pytest.approx(-empyrical.max_drawdown(simple))
    assert m["max_drawdown"] > 0
    assert m["calmar"] == pytest.approx(empyrical.calmar_ratio(simple, annualization=ppy))
    assert m["log_return"] == pytest.approx(log_returns.sum())
    assert m["total_return"] == pytest.approx(np.prod(1 + simple) - 1)
    # the Sharpe is the per-period one, annualised
    assert m["sharpe"] == pytest.approx(sharpe_per_period(simple) * math.sqrt(ppy))


def test_flat_policy_and_degenerate_series_give_finite_zeros():
    flat = trading_metrics(np.zeros(100), np.zeros(100), periods_per_year=252)
    assert flat == dict.fromkeys(TRADING_METRIC_KEYS, 0.0)
    assert trading_metrics([], [], 252) == dict.fromkeys(TRADING_METRIC_KEYS, 0.0)
    # constant positive return: no variance (Sharpe), no loss (Sortino), no drawdown (Calmar)
    # 0.007: a value whose float mean is off by an ulp, so np.std is 9e-19, not 0
    steady = trading_metrics(np.full(50, 0.007), np.ones(50), periods_per_year=252)
    assert steady["sharpe"] == steady["sortino"] == steady["calmar"] == 0.0
    assert steady["max_drawdown"] == 0.0 and steady["total_return"] > 0
    one_bar = trading_metrics([0.01], [1.0], periods_per_year=252)
    assert all(math.isfinite(v) for v in one_bar.values()) and one_bar["sharpe"] == 0.0


def test_trading_metrics_rejects_bad_inputs():
    with pytest.raises(ValueError, match="positions has 2"):
        trading_metrics(np.zeros(3), np.zeros(2), 252)
    with pytest.raises(ValueError, match=r"log_returns\[1\] is nan"):
        trading_metrics([0.0, np.nan], [0.0, 0.0], 252)
    with pytest.raises(ValueError, match="periods_per_year is 0"):
        trading_metrics(np.zeros(3), np.zeros(3), 0)


def test_sharpe_per_period_is_zero_without_variance():
    x = np.column_stack([np.full(10, 0.1), np.arange(10.0), np.zeros(10)])
    np.testing.assert_allclose(sharpe_per_period(x), [0.0, 4.5 / np.std(np.arange(10), ddof=1),
                                                      0.0])
    assert sharpe_per_period(np.array([0.3])) == 0.0


# ---------------------------------------------------------------------------- DSR / PSR
# Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", section "A numerical example":
# N = 100 trials whose ANNUALISED Sharpe ratios have variance 1/2, a selected annualised SR of
# 2.5 over T = 1250 daily observations (250 a year), skew -3, kurtosis 10. The paper reports
# SR0 = 0.1132 (per day), DSR = 0.9004; N = 46 trials would give DSR = 0.9505, and normal
# returns (skew 0, kurtosis 3) would reach 0.9505 only at N = 88. The Sharpe converts by
# sqrt(250), its variance by 250.
PAPER_SR = 2.5 / math.sqrt(250)
PAPER_VAR = 0.5 / 250


def test_expected_max_sharpe_reproduces_the_paper():
    assert expected_max_sharpe(100, PAPER_VAR) == pytest.approx(0.1132, abs=5e-5)
    assert expected_max_sharpe(1, PAPER_VAR) == 0.0  # one trial: no selection


@pytest.mark.parametrize(
    ("n_trials", "skew", "kurtosis", "dsr"),
    [(100, -3.0, 10.0, 0.9004), (46, -3.0, 10.0, 0.9505), (88, 0.0, 3.0, 0.9505)],
)
def test_deflated_sharpe_reproduces_the_paper(n_trials, skew, kurtosis, dsr):
    benchmark = expected_max_sharpe(n_trials, PAPER_VAR)
    got = probabilistic_sharpe_ratio(PAPER_SR, benchmark, 1250, skew, kurtosis)
    assert got == pytest.approx(dsr, abs=1e-4)


def test_psr_matches_the_sharpe_ratio_efficient_frontier_example():
    # Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier": annualised SR
    # 1.585 from 24 monthly returns, skew -2.448, kurtosis 10.164 -> PSR(0) = 0.9132 (the
    # value esvhd/pypbo's test suite also pins)
    got = probabilistic_sharpe_ratio(1.585 / math.sqrt(12), 0.0, 24, -2.448, 10.164)
    assert got == pytest.approx(0.9132, abs=1e-4)


def test_deflated_sharpe_ratio_from_series_reproduces_the_paper():
    # A two-point distribution has kurtosis = skew^2 + 1, so 1145 "up" bars out of 1250 give
    # skew -3.0 and kurtosis 10.0 (to 1e-3); shift it so the per-day Sharpe is exactly
    # 2.5 / sqrt(250). Trial Sharpes +-a have variance 2a^2 = 0.5 / 250.
    up = np.zeros(1250)
    up[:1145] = 1.0
    up = np.random.default_rng(0).permutation(up)
    best = up + PAPER_SR * up.std(ddof=1) - up.mean()
    a = math.sqrt(PAPER_VAR / 2)
    result = deflated_sharpe_ratio(best, np.array([a, -a]), n_trials=100)
    assert result.sharpe == pytest.approx(PAPER_SR, rel=1e-12)
    assert result.skew == pytest.approx(-3.0, abs=1e-3)
    assert result.kurtosis == pytest.approx(10.0, abs=1e-2)
    assert result.sharpe_variance == pytest.approx(PAPER_VAR, rel=1e-12)
    assert result.expected_max_sharpe == pytest.approx(0.1132, abs=5e-5)
    assert (result.n_trials, result.n_obs) == (100, 1250)
    assert result.dsr == pytest.approx(0.9004, abs=1e-3)


def test_deflated_sharpe_ratio_uses_the_moments_of_the_best_series():
    rng = np.random.default_rng(3)
    best = rng.standard_t(5, 500) * 0.01 + 0.001
    trials = rng.normal(0.0, 0.03, 20)
    result = deflated_sharpe_ratio(best, trials)
    expected = probabilistic_sharpe_ratio(
        best.mean() / best.std(ddof=1),
        expected_max_sharpe(20, np.var(trials, ddof=1)),
        500,
        sps.skew(best),
        sps.kurtosis(best, fisher=False),
    )
    assert result.dsr == pytest.approx(expected, rel=1e-12)
    # a single trial, no variance: the DSR is the PSR against 0
    single = deflated_sharpe_ratio(best, trials[:1])
    assert single.expected_max_sharpe == 0.0
    assert single.dsr == pytest.approx(
        probabilistic_sharpe_ratio(single.sharpe, 0.0, 500, single.skew, single.kurtosis)
    )


def test_deflated_sharpe_falls_as_trials_grow():
    rng = np.random.default_rng(11)
    best = rng.normal(0.002, 0.01, 1000)
    trials = rng.normal(0.0, 0.03, 50)
    dsrs = [deflated_sharpe_ratio(best, trials, n_trials=n).dsr for n in (50, 200, 1000, 10000)]
    assert all(a > b for a, b in itertools.pairwise(dsrs))


def test_best_of_fifty_noise_trials_is_not_significant():
    returns = np.random.default_rng(5).normal(0.0, 0.01, (1000, 50))
    sharpes = sharpe_per_period(returns)
    best = returns[:, int(np.argmax(sharpes))]
    result = deflated_sharpe_ratio(best, sharpes)
    assert result.sharpe == pytest.approx(sharpes.max())
    assert result.dsr < 0.95
    # ...whereas its PSR against 0, which ignores the selection, looks convincing
    assert probabilistic_sharpe_ratio(result.sharpe, 0.0, 1000, result.skew,
                                      result.kurtosis) > 0.95


def test_dsr_rejects_bad_inputs():
    with pytest.raises(ValueError, match="n_obs is 1"):
        probabilistic_sharpe_ratio(0.1, 0.0, 1, 0.0, 3.0)
    with pytest.raises(ValueError, match="non-excess"):
        probabilistic_sharpe_ratio(2.0, 0.0, 100, 3.0, 3.0)  # annualised SR with big skew
    with pytest.raises(ValueError, match="n_trials is 0.5"):
        expected_max_sharpe(0.5, 0.1)
    with pytest.raises(ValueError, match="sharpe_variance is -1"):
        expected_max_sharpe(10, -1)
    with pytest.raises(ValueError, match="n_trials is 2 but trial_sharpes holds 3"):
        deflated_sharpe_ratio(np.arange(5.0), np.zeros(3), n_trials=2)


# ---------------------------------------------------------------------------- PBO


def _naive_pbo(matrix: np.ndarray, n_splits: int) -> tuple[float, np.ndarray]:
    """CSCV written straight from the paper, one split at a time."""
    rows = matrix.shape[0] // n_splits * n_splits
    blocks = np.split(matrix[matrix.shape[0] - rows:], n_splits)
    n = matrix.shape[1]
    logits = []
    for chosen in itertools.combinations(range(n_splits), n_splits // 2):
        is_rows = np.concatenate([blocks[i] for i in chosen])
        oos_rows = np.concatenate([blocks[i] for i in range(n_splits) if i not in chosen])
        is_sr = [sharpe_per_period(is_rows[:, j]) for j in range(n)]
        oos_sr = [sharpe_per_period(oos_rows[:, j]) for j in range(n)]
        best = int(np.argmax(is_sr))
        below = sum(s < oos_sr[best] for s in oos_sr)
        ties = sum(s == oos_sr[best] for s in oos_sr)  # includes best itself
        omega = (below + (ties + 1) / 2) / (n + 1)
        logits.append(math.log(omega / (1 - omega)))
    logits = np.array(logits)
    return float(np.mean(logits <= 0)), logits


def test_pbo_two_blocks_two_trials_by_hand():
    # blocks A = rows 0-1, B = rows 2-3. Per-period Sharpe (ddof=1):
    #   trial 0: A [1, 3] -> 2/sqrt(2) = 1.414,  B [-1, 0] -> -0.5/sqrt(0.5) = -0.707
    #   trial 1: A [0, 1] -> 0.5/sqrt(0.5) = 0.707,  B [1, 2] -> 1.5/sqrt(0.5) = 2.121
    # IS = A picks trial 0, last of 2 in B: omega = 1/3, logit = log(1/2); IS = B picks
    # trial 1, last in A: logit log(1/2) again. PBO = 1; OOS Sharpes of the picks -0.707 and
    # 0.707 (one loss in two); slope (0.707 - -0.707) / (2.121 - 1.414) = 2.
    m = np.array([[1.0, 0.0], [3.0, 1.0], [-1.0, 1.0], [0.0, 2.0]])
    result = probability_of_backtest_overfitting(m, n_splits=2)
    assert (result.n_splits, result.n_combinations, result.n_trials, result.n_obs) == (2, 2, 2, 4)
    np.testing.assert_allclose(result.logits, [-math.log(2)] * 2)
    assert result.pbo == 1.0
    assert result.prob_oos_loss == 0.5
    assert result.performance_degradation_slope == pytest.approx(2.0)
    # trial 0 made best in both halves: A [1, 1.5] -> 1.25 / 0.354 = 3.536, B [2, 2.5] ->
    # 2.25 / 0.354 = 6.364. Both splits pick it and it is 2nd of 2 OOS: logit log(2), PBO 0;
    # the IS/OOS Sharpes of the pick swap between splits, so the slope is -1
    m[:, 0] = [1.0, 1.5, 2.0, 2.5]
    result = probability_of_backtest_overfitting(m, n_splits=2)
    np.testing.assert_allclose(result.logits, [math.log(2)] * 2)
    assert result.pbo == 0.0 and result.prob_oos_loss == 0.0
    assert result.performance_degradation_slope == pytest.approx(-1.0)


def test_pbo_counts_a_median_rank_as_overfit():
    # 3 trials: the IS winner is 2nd of 3 out of sample in both splits -> omega = 2/4,
    # logit exactly 0, which the paper counts as overfit (lambda <= 0)
    #   trial 0: A [1, 3] 1.414,  B [0, 1] 0.707
    #   trial 1: A [0, 1] 0.707,  B [1, 2] 2.121
    #   trial 2: A [-1, 0] -0.707, B [-1, 0] -0.707
    m = np.array([[1.0, 0.0, -1.0], [3.0, 1.0, 0.0], [0.0, 1.0, -1.0], [1.0, 2.0, 0.0]])
    result = probability_of_backtest_overfitting(m, n_splits=2)
    np.testing.assert_allclose(result.logits, [0.0, 0.0], atol=1e-15)
    assert result.pbo == 1.0


def test_pbo_matches_a_naive_implementation():
    rng = np.random.default_rng(2)
    m = rng.normal(0.0, 0.01, (63, 5)) + np.array([0.0, 0.001, 0.002, 0.0, 0.004])
    # a trial flat for a while, exactly constant in 4 of the 20 IS halves; with 0.007 the
    # sum-of-squares variance of such a half rounds to 7e-21, not 0, so a Sharpe of 1e8
    # would win them unless flat halves are detected
    m[:45, 3] = 0.007
    expected_pbo, expected_logits = _naive_pbo(m, 6)  # 63 rows: the oldest 3 are dropped
    result = probability_of_backtest_overfitting(m, n_splits=6)
    assert (result.n_combinations, result.n_obs) == (20, 60)
    np.testing.assert_allclose(result.logits, expected_logits, rtol=1e-12)
    assert result.pbo == expected_pbo
    # a custom metric runs the slow path, which must agree with the vectorised one
    custom = probability_of_backtest_overfitting(m, n_splits=6, metric=sharpe_per_period)
    np.testing.assert_allclose(custom.logits, expected_logits, rtol=1e-12)


def test_pbo_of_pure_noise_is_about_one_half():
    # the IS winner among skill-less trials has a uniform OOS rank, so PBO ~ 0.5; one matrix
    # scatters by ~0.16 around it, so average 4 matrices (S = 16: 12870 splits each)
    pbos = [
        probability_of_backtest_overfitting(
            np.random.default_rng(seed).normal(0.0, 0.01, (1000, 50)), n_splits=16
        ).pbo
        for seed in range(4)
    ]
    assert 0.3 < np.mean(pbos) < 0.7
    assert all(p > 0.15 for p in pbos)


def test_pbo_of_a_real_edge_is_low():
    m = np.random.default_rng(0).normal(0.0, 0.01, (1000, 50))
    m[:, 7] += 0.002  # per-bar Sharpe 0.2 against 49 noise trials
    result = probability_of_backtest_overfitting(m, n_splits=16)
    assert result.pbo < 0.1
    assert result.prob_oos_loss < 0.1
    assert np.median(result.logits) > 0


def test_pbo_rejects_bad_inputs():
    m = np.zeros((20, 3))
    with pytest.raises(ValueError, match="n_splits is 3"):
        probability_of_backtest_overfitting(m, n_splits=3)
    with pytest.raises(ValueError, match="20 rows, fewer than n_splits=22"):
        probability_of_backtest_overfitting(m, n_splits=22)
    with pytest.raises(ValueError, match="1 trial column"):
        probability_of_backtest_overfitting(m[:, :1], n_splits=4)
    with pytest.raises(ValueError, match="2-D"):
        probability_of_backtest_overfitting(m[:, 0], n_splits=4)
    with pytest.raises(ValueError, match="a Sharpe ratio needs at least 2"):
        probability_of_backtest_overfitting(np.arange(6.0).reshape(3, 2), n_splits=2)


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_of_a_flat_series_is_a_point():
    for statistic in ("sharpe", "total_return"):
        ci = bootstrap_confidence_interval(np.zeros(200), statistic, periods_per_year=252)
        assert tuple(ci) == (0.0, 0.0) and ci.n_resamples == 0


def test_bootstrap_sharpe_interval_has_the_expected_width_and_is_reproducible():
    r = np.random.default_rng(1).normal(0.0005, 0.01, 1000)
    ci = bootstrap_confidence_interval(r, "sharpe", periods_per_year=252, n_resamples=500)
    assert ci.low < ci.estimate < ci.high
    assert ci.estimate == pytest.approx(trading_metrics(r, np.ones(1000), 252)["sharpe"])
    # i.i.d. returns: the annualised Sharpe's standard error is ~ sqrt(252 / 1000)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * math.sqrt(252 / 1000), rel=0.2)
    assert tuple(ci) == tuple(
        bootstrap_confidence_interval(r, "sharpe", periods_per_year=252, n_resamples=500)
    )
    other = bootstrap_confidence_interval(r, "sharpe", 252, n_resamples=500, seed=1)
    assert tuple(other) != tuple(ci)
    narrow = bootstrap_confidence_interval(r, "sharpe", 252, confidence=0.5, n_resamples=500)
    assert ci.low < narrow.low < narrow.high < ci.high


def test_bootstrap_block_length_defaults_to_the_optimal_one():
    rng = np.random.default_rng(4)
    r = np.zeros(800)
    shocks = rng.normal(0.0, 0.01, 800)
    for t in range(1, 800):  # AR(1): blocks must be longer than one bar
        r[t] = 0.7 * r[t - 1] + shocks[t]
    ci = bootstrap_confidence_interval(r, "total_return", periods_per_year=252,
                                       n_resamples=200)
    expected = optimal_block_length(r)["stationary"].iloc[0]
    assert expected > 2 and ci.block_length == pytest.approx(expected)
    assert ci.low < ci.estimate < ci.high
    assert ci.estimate == pytest.approx(np.expm1(r.sum()))
    fixed = bootstrap_confidence_interval(r, "total_return", 252, n_resamples=200,
                                          block_length=5)
    assert fixed.block_length == 5.0


def test_bootstrap_interval_is_the_percentiles_of_the_replicates():
    # volatile returns: the total return's bootstrap distribution is skewed and bounded by -1,
    # which percentile bounds respect (a normal-approximation interval would not)
    r = np.random.default_rng(8).normal(0.0, 0.05, 300)
    ci = bootstrap_confidence_interval(r, "total_return", 252, n_resamples=300, block_length=3,
                                       seed=5)
    replicates = StationaryBootstrap(3, r, seed=5).apply(
        lambda x: np.array([np.expm1(x.sum())]), 300
    )[:, 0]
    np.testing.assert_allclose(tuple(ci), np.percentile(replicates, [2.5, 97.5]))
    assert -1.0 < ci.low < ci.estimate < ci.high


def test_bootstrap_rejects_bad_inputs():
    r = np.random.default_rng(0).normal(0, 0.01, 50)
    with pytest.raises(ValueError, match="statistic is 'sortino'; valid: sharpe, total_return"):
        bootstrap_confidence_interval(r, "sortino", 252)
    with pytest.raises(ValueError, match="confidence is 95"):
        bootstrap_confidence_interval(r, "sharpe", 252, confidence=95)
    with pytest.raises(ValueError, match="block_length is 0.5"):
        bootstrap_confidence_interval(r, "sharpe", 252, block_length=0.5)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_confidence_interval(r[:1], "sharpe", 252)
