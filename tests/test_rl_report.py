"""The final test report: trading metrics, bootstrap intervals, search statistics, verdict."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from _rl_fixtures import tiny_fx_config

from fxai_tune.rl import PPOLightningModule, build_training, final_report, train
from fxai_tune.rl import _report as report_module
from fxai_tune.rl._report import FinalReport, edge_verdict, policy_intervals, search_lines
from fxai_tune.stats import TRADING_METRIC_KEYS, ConfidenceInterval, trading_metrics

POLICIES = {"agent", "buy_and_hold", "flat", "random"}
PROVENANCE = {
    "study": "noise-demo",
    "trial": 7,
    "values": [0.12],
    "search": {
        "n_trials": 20,
        "deflated_sharpe_ratio": 0.41,
        "probability_of_backtest_overfitting": 0.7,
        "note": "",
    },
}


def _noise_config(tmp_path, **sections):
    """A tiny FX run on a pure random walk: no regime drift, no planted signal."""
    return tiny_fx_config(
        tmp_path,
        data={"synthetic": {"regimes": ["random_walk"], "signal_strength": 0.0}},
        **sections,
    )


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained agent's report on the noise market, the passes it was computed from and
    the run; the config carries an export-best provenance."""
    tmp_path = tmp_path_factory.mktemp("untrained")
    config = dataclasses.replace(_noise_config(tmp_path), provenance=PROVENANCE)
    run = build_training(config, loggers=False, checkpointing=False)
    passes = {}
    original = report_module.backtest

    def recording_backtest(*args, **kwargs):
        passes.update(original(*args, **kwargs))
        return passes

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_module, "backtest", recording_backtest)
        report = final_report(run)
    return report, passes, run


def test_report_rows_are_the_trading_metrics_of_each_policys_pass(untrained):
    report, passes, run = untrained
    periods_per_year = run.datamodule.data.periods_per_year
    assert set(report) == set(passes) == POLICIES
    for name, result in passes.items():
        assert result.log_returns.size > 100  # one full pass of the test split
        expected = trading_metrics(result.log_returns, result.positions, periods_per_year)
        row = report[name]
        assert {k: row[k] for k in TRADING_METRIC_KEYS} == expected, name
        assert row["reward"] == result.stats["reward"]
        assert 0.0 <= row["win_rate"] <= 1.0
    assert report["flat"]["total_return"] == 0.0 and report["flat"]["exposure"] == 0.0
    assert report["buy_and_hold"]["exposure"] == 1.0
    written = json.loads((run.run_dir / "report.json").read_text())
    assert set(written) >= {"split", "results", "intervals", "verdict", "search", "weights"}
    assert written["split"] == "test"
    assert written["results"] == report.results


def test_intervals_contain_the_estimate_and_repeat_with_the_seed(untrained):
    report, passes, run = untrained
    periods_per_year = run.datamodule.data.periods_per_year
    for name in POLICIES:
        row = report[name]
        for statistic in ("sharpe", "total_return"):
            interval = report.intervals[name][statistic]
            assert interval["estimate"] == pytest.approx(row[statistic], rel=1e-9, abs=1e-12)
            assert interval["low"] <= interval["estimate"] <= interval["high"], (name, interval)
            assert row[f"{statistic}_ci"] == [interval["low"], interval["high"]]
    agent = report.intervals["agent"]
    assert agent["sharpe"]["low"] < agent["sharpe"]["high"]  # a trading pass varies
    assert agent["sharpe"]["confidence"] == 0.95 and agent["sharpe"]["n_resamples"] == 1000
    returns = passes["agent"].log_returns
    again = policy_intervals(returns, periods_per_year, seed=run.config.seed)
    assert (again["sharpe"].low, again["sharpe"].high) == (
        agent["sharpe"]["low"],
        agent["sharpe"]["high"],
    )
    other = policy_intervals(returns, periods_per_year, seed=run.config.seed + 1)
    assert (other["sharpe"].low, other["sharpe"].high) != (
        agent["sharpe"]["low"],
        agent["sharpe"]["high"],
    )
    assert report.bootstrap["seed"] == run.config.seed


def test_untrained_agents_on_noise_show_no_edge(tmp_path):
    """Ten untrained networks on a random walk: their Sharpe point estimates scatter around 0
    (four of these ten are positive and two beat every baseline), but a 95% interval rarely
    excludes 0: at most 2 of 10 may say edge (the nominal false-positive rate is < 2.5%)."""
    run = build_training(_noise_config(tmp_path), loggers=False, checkpointing=False)
    datamodule, config = run.datamodule, run.config
    verdicts = []
    for seed in range(10):
        torch.manual_seed(seed)
        run.module = PPOLightningModule(
            config.ppo, config.model, datamodule.observation_space, datamodule.action_space
        )
        verdicts.append(final_report(run).verdict)
    no_edge = [v for v in verdicts if v.startswith("No edge: on the test split the agent's")]
    assert len(no_edge) >= 8, verdicts
    assert all("not evidence of an edge" in v for v in no_edge)
    assert all(v.startswith(("No edge", "Edge")) for v in verdicts)


def test_the_search_statistics_of_the_provenance_are_in_report_json(untrained):
    report, _, run = untrained
    assert "DSR 0.41 < 0.95" in report.verdict and "PBO 0.70 > 0.5" in report.verdict
    written = json.loads((run.run_dir / "report.json").read_text())
    assert written["verdict"] == report.verdict
    assert written["search"] == PROVENANCE
    assert written["search"]["search"]["deflated_sharpe_ratio"] == 0.41
    assert written["search"]["search"]["probability_of_backtest_overfitting"] == 0.7
    assert written["verdict"] == edge_verdict(
        written["results"], written["intervals"], written["search"]
    )  # the verdict can be recomputed from report.json alone
    lines = search_lines(report.search)
    assert lines[0] == "Config from the search (study noise-demo, trial 7, recorded value [0.12])"
    assert any(
        "Deflated Sharpe Ratio" in line and "0.410 over 20 trials" in line for line in lines
    )
    assert any("Backtest Overfitting: 0.70" in line for line in lines)


def test_without_provenance_the_report_has_no_search(tmp_path):
    run = build_training(_noise_config(tmp_path), loggers=False, checkpointing=False)
    report = final_report(run, n_resamples=50)
    assert report.search is None and search_lines(report.search) == []
    assert "DSR" not in report.verdict
    assert json.loads((tmp_path / "report.json").read_text())["search"] is None
    # no checkpoint: the weights in memory, and no best checkpoint to load
    assert report.weights == "last" and report.checkpoint is None
    with pytest.raises(ValueError, match="best checkpoint"):
        final_report(run, weights="best")
    with pytest.raises(ValueError, match="'last' or 'best'"):
        final_report(run, weights="first")


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _same_weights(module, state):
    return all(
        torch.equal(value.cpu(), state[key].cpu()) for key, value in module.state_dict().items()
    )


def test_the_report_uses_the_last_checkpoint_unless_asked_for_the_best(tmp_path):
    run = train(tiny_fx_config(tmp_path), loggers=False)
    last, best = run.checkpoint.last_model_path, run.checkpoint.best_model_path
    assert last and best
    with torch.no_grad():  # the report must load last.ckpt, not report what is in memory
        for parameter in run.module.parameters():
            parameter.zero_()
    report = final_report(run, n_resamples=50)
    assert report.weights == "last" and report.checkpoint == last
    assert _same_weights(run.module, _state(last))
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["weights"] == "last" and written["checkpoint"] == last

    report = final_report(run, weights="best", n_resamples=50)
    assert report.weights == "best" and report.checkpoint == best
    assert _same_weights(run.module, _state(best))


# ---------------------------------------------------------------------- the verdict, pure


def _inputs(agent_return=0.05, sharpe_ci=(0.4, 3.0), **baselines):
    returns = {"buy_and_hold": 0.01, "flat": 0.0, "random": -0.02, **baselines}
    results = {"agent": {"total_return": agent_return}}
    results.update({name: {"total_return": value} for name, value in returns.items()})
    low, high = sharpe_ci
    intervals = {"agent": {"sharpe": {"low": low, "high": high, "confidence": 0.95}}}
    return results, intervals


def test_verdict_says_edge_only_when_the_sharpe_ci_is_above_zero_and_all_baselines_lose():
    results, intervals = _inputs()
    verdict = edge_verdict(results, intervals)
    assert verdict.startswith("Edge on the test split: the agent's Sharpe 95% CI [0.40, 3.00]")
    assert "beats buy-and-hold (+1.00%), flat (+0.00%) and random (-2.00%)." in verdict

    # the CI touching 0 is not an edge
    results, intervals = _inputs(sharpe_ci=(-0.1, 3.0))
    verdict = edge_verdict(results, intervals)
    assert verdict.startswith("No edge") and "[-0.10, 3.00] includes 0" in verdict
    results, intervals = _inputs(sharpe_ci=(0.0, 3.0))
    assert edge_verdict(results, intervals).startswith("No edge")
    results, intervals = _inputs(sharpe_ci=(-3.0, -0.5))
    assert "is entirely below 0" in edge_verdict(results, intervals)

    # every baseline must be beaten
    results, intervals = _inputs(agent_return=0.05, buy_and_hold=0.08)
    verdict = edge_verdict(results, intervals)
    assert verdict.startswith("No edge") and "does not beat buy-and-hold (+8.00%)" in verdict
    assert "random" not in verdict  # only the baselines it does not beat are named
    results, intervals = _inputs(agent_return=-0.01, buy_and_hold=-0.05)
    verdict = edge_verdict(results, intervals)
    assert verdict.startswith("No edge") and "does not beat flat (+0.00%)" in verdict
    results, intervals = _inputs(agent_return=0.05, random=0.05)
    assert "does not beat random (+5.00%)" in edge_verdict(results, intervals)
    results, intervals = _inputs()
    del results["flat"]  # flat counts as 0 when it is not in the table
    results["agent"]["total_return"] = -0.001
    results["buy_and_hold"]["total_return"] = -0.01
    assert "does not beat flat" in edge_verdict(results, intervals)


def test_verdict_takes_any_interval_form_and_adds_the_search_caveat():
    results, _ = _inputs()
    forms = [
        ConfidenceInterval(0.4, 3.0, 0.9, 5.0, 1000, "sharpe", 1.5),
        {"low": 0.4, "high": 3.0, "confidence": 0.9},
    ]
    for form in forms:
        verdict = edge_verdict(results, {"agent": {"sharpe": form}})
        assert verdict.startswith("Edge") and "Sharpe 90% CI [0.40, 3.00]" in verdict
    assert "95% CI" in edge_verdict(results, {"agent": {"sharpe": (0.4, 3.0)}})

    _, intervals = _inputs()
    verdict = edge_verdict(results, intervals, PROVENANCE)
    assert verdict.startswith("Edge") and "treat it with caution" in verdict
    assert "not significant after deflation (DSR 0.41 < 0.95)" in verdict
    assert "likely overfit (PBO 0.70 > 0.5)" in verdict
    significant = {
        "search": {"deflated_sharpe_ratio": 0.97, "probability_of_backtest_overfitting": 0.2}
    }
    assert "DSR" not in edge_verdict(results, intervals, significant)
    assert "PBO" not in edge_verdict(results, intervals, significant)
    undefined = {
        "search": {"deflated_sharpe_ratio": None, "probability_of_backtest_overfitting": None}
    }
    assert edge_verdict(results, intervals, undefined) == edge_verdict(results, intervals)
    # a bare statistics dict works as well as a provenance
    assert "DSR 0.41" in edge_verdict(results, intervals, PROVENANCE["search"])

    no_edge = edge_verdict(*_inputs(sharpe_ci=(-1.2, 2.3)), PROVENANCE)
    assert no_edge.startswith("No edge") and "moreover the search's best trial" in no_edge
    assert edge_verdict({"agent": {"reward": 1.0}}, {}).startswith("No verdict")


# ---------------------------------------------------------------------- the CLI's printing


def test_the_cli_prints_the_table_intervals_search_lines_and_verdict(capsys, tmp_path):
    from fxai_tune.cli.main import _print_final_report

    results, intervals = _inputs(sharpe_ci=(-1.2, 2.3))
    row = dict.fromkeys(TRADING_METRIC_KEYS, 0.01) | {"win_rate": 0.5, "reward": -3.0}
    table = {
        name: {**row, **values, "sharpe_ci": [-1.2, 2.3], "total_return_ci": [-0.1, 0.2]}
        for name, values in results.items()
    }
    report = FinalReport(
        split="test",
        results=table,
        intervals=intervals,
        verdict=edge_verdict(results, intervals, PROVENANCE),
        search=PROVENANCE,
        weights="last",
        checkpoint=str(tmp_path / "checkpoints" / "last.ckpt"),
        bootstrap={"confidence": 0.95, "n_resamples": 1000, "seed": 0},
    )
    _print_final_report(report, tmp_path)
    out = capsys.readouterr().out
    for text in (
        "sharpe [95% CI]",
        "[-1.20, 2.30]",
        "buy_and_hold",
        "sortino",
        "calmar",
        "exposure",
        "win rate",
        "max DD",
        "Total return 95% CI: agent [-10.00%",
        "Deflated Sharpe Ratio of the search's best trial: 0.410",
        "Probability of Backtest Overfitting: 0.70",
        "Verdict: No edge",
        "Agent weights: last (",
        "noise-demo",
    ):
        assert text in out, text
    assert "…" not in out  # no cell is truncated
    assert "reward" not in out.split("Total return")[0]  # the shaped reward is not a column
    assert np.isfinite(report["agent"]["total_return"])


def test_the_thresholds_are_the_search_statistics_ones():
    from fxai_tune.tune import _statistics

    assert report_module.SIGNIFICANT_DSR == _statistics.SIGNIFICANT_DSR
    assert report_module.OVERFIT_PBO == _statistics.OVERFIT_PBO


def test_the_buy_and_hold_baseline_pays_the_swap_of_the_env(tmp_path):
    from fxai_tune.data import rollover_nights
    from fxai_tune.rl._envs import make_data_manager
    from fxai_tune.rl._report import backtest, baseline_policies

    def buy_and_hold_equity(swap_long: float) -> float:
        config = tiny_fx_config(tmp_path, env={"financing": {"unit": "pips",
                                                              "swap_long": swap_long}})
        policies = baseline_policies(config.env.n_actions, seed=0)
        results = backtest(config, {"buy_and_hold": policies["buy_and_hold"]}, data=data)
        return float(results["buy_and_hold"].equity[-1])

    config = tiny_fx_config(tmp_path)
    data = make_data_manager(config)
    val = data.market("val")
    first = max(val.start, *(  # the first decision bar: every observation window complete
        int(np.argmax(val.last_complete[tf] >= w - 1)) for tf, w in config.env.windows.items()))
    nights = rollover_nights(val.timestamps)[first + 1:val.end].sum()
    assert nights > 5
    lot = config.env.lot_size
    # synthetic EURUSD prices in a USD account: 1 pip x 1 lot = 10 USD a night
    assert buy_and_hold_equity(0.0) - buy_and_hold_equity(-1.0) == pytest.approx(
        nights * lot * 1e-4, rel=1e-6)
