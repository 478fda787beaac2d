"""What a trial's score means: the unshaped evaluation reward, its trading metrics, the
refusal of self-grading searches, walk-forward folds and pruning across them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from _rl_fixtures import tiny_fx_config
from _tune_fixtures import write_tiny_study

from fxai_tune.data import DataConfig, DataManager
from fxai_tune.data._synthetic import SyntheticConfig, generate_synthetic_bars
from fxai_tune.rl import train
from fxai_tune.tune._space import PACKAGE_DIR
from fxai_tune.stats import trading_metrics
from fxai_tune.tune import (
    ObjectiveSpec,
    StudyError,
    ValidationHistory,
    check_unshaped_objective,
    decode_returns,
    load_study_config,
    score_trial,
)

CLI = [sys.executable, "-m", "fxai_tune.cli.main"]


def _frozen_policy_history(tmp_path, name, weights):
    """Validations of a run whose policy cannot learn (lr 1e-12), with reward ``weights``."""
    config = tiny_fx_config(
        tmp_path / name,
        env={"reward": {"weights": weights}},
        ppo={"learning_rate": 1e-12},
        trainer={"val_episodes": 4},
    )
    history = ValidationHistory()
    train(config, extra_callbacks=[history], loggers=False, checkpointing=False)
    return history


def test_reward_shaping_weights_do_not_move_the_validation_score(tmp_path):
    plain = _frozen_policy_history(tmp_path, "plain", {"drawdown": 0.0})
    shaped = _frozen_policy_history(
        tmp_path, "shaped", {"drawdown": 2.0, "differential_sharpe": 0.5, "holding": 0.01}
    )
    assert len(plain.history) == len(shaped.history) >= 2
    for a, b in zip(plain.history, shaped.history, strict=True):
        assert a["val/episode_reward"] == b["val/episode_reward"]
        assert a["val/sharpe"] == b["val/sharpe"] and a["val/trades"] == b["val/trades"]
    # the shaped reward is logged apart, and it is the one the weights move
    assert plain.history[-1]["val/shaped_reward"] != shaped.history[-1]["val/shaped_reward"]


def test_each_validation_logs_the_trading_metrics_of_its_net_equity_pass(tmp_path):
    history = _frozen_policy_history(tmp_path, "metrics", {})
    metrics, evaluation = history.history[-1], history.evaluations[-1]
    expected = trading_metrics(
        evaluation.log_returns, evaluation.positions, evaluation.periods_per_year
    )
    for key in ("log_return", "sharpe", "sortino", "max_drawdown", "calmar", "turnover",
                "trades", "exposure"):
        assert metrics[f"val/{key}"] == pytest.approx(expected[key]), key
    # val/episode_reward defaults to the pass's net log return, after costs
    assert metrics["val/episode_reward"] == pytest.approx(evaluation.log_returns.sum())
    # the windows of the batched pass tile the val split: one return per decision bar
    data = DataManager(tiny_fx_config(tmp_path).data, windows={"1h": 16, "4h": 4})
    assert evaluation.log_returns.size == data.market("val").n_decisions
    assert len(evaluation.episodes) == 4


def test_a_risk_adjusted_score_can_be_chosen(tmp_path):
    config = tiny_fx_config(tmp_path, trainer={"val_score": "sharpe", "val_episodes": 2})
    history = ValidationHistory()
    train(config, extra_callbacks=[history], loggers=False, checkpointing=False)
    assert history.history[-1]["val/episode_reward"] == history.history[-1]["val/sharpe"]
    with pytest.raises(ValueError, match="val_score must be one of"):
        tiny_fx_config(tmp_path, trainer={"val_score": "shaped_reward"})


# -- refusing a search that grades itself -------------------------------------------------------


def test_tuning_reward_weights_against_the_shaped_reward_is_refused():
    spec = ObjectiveSpec(metrics=("val/shaped_reward",))
    with pytest.raises(ValueError, match=r"env\.reward\.weights\.drawdown.*val/episode_reward"):
        check_unshaped_objective(spec, ["ppo.gamma", "env.reward.weights.drawdown"])
    check_unshaped_objective(spec, ["ppo.gamma"])  # nothing shaped is tuned: allowed
    check_unshaped_objective(ObjectiveSpec(), ["env.reward.weights.drawdown"])


def test_a_study_file_that_grades_itself_is_a_one_line_error_before_any_trial(tmp_path):
    path = write_tiny_study(
        tmp_path,
        "selfgrade",
        objective={"metrics": ["val/shaped_reward"]},
        search_space={"params": {
            "env.reward.weights.drawdown": {"type": "float", "low": 0.0, "high": 2.0}}},
    )
    with pytest.raises(StudyError, match="env.reward.weights.drawdown"):
        load_study_config(path)
    done = subprocess.run([*CLI, "run", "--study", str(path)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "val/shaped_reward" in lines[0] and "valid metrics" in lines[0]
    assert not (tmp_path / "selfgrade.db").exists()  # no storage, no trial


def test_a_hydra_sweep_that_grades_itself_is_refused_before_any_trial(tmp_path):
    db = tmp_path / "sweep.db"
    done = subprocess.run(
        [sys.executable, "-m", "fxai_tune.train", "hparams_search=quick",
         "objective.metrics=[val/shaped_reward]", f"hydra.sweeper.storage=sqlite:///{db}",
         f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "env.reward.weights.drawdown" in done.stderr and "valid metrics" in done.stderr
    if db.exists():
        summaries = optuna.get_all_study_summaries(f"sqlite:///{db}")
        assert all(s.n_trials == 0 for s in summaries)


def test_every_shipped_study_and_sweep_scores_an_unshaped_metric():
    studies = sorted((PACKAGE_DIR / "studies").glob("*.yaml"))
    assert len(studies) >= 3
    for path in studies:
        study = load_study_config(path)  # would raise for a self-grading study
        assert "val/shaped_reward" not in study.metrics, path
        lines = path.read_text().splitlines()
        above = lines[lines.index("objective:") - 1]
        assert above.startswith("#"), f"{path.name} must say in a comment why its objective fits"


# -- walk-forward folds ---------------------------------------------------------------------------


def _bars_file(tmp_path, name, perturb_test=False):
    bars = generate_synthetic_bars(SyntheticConfig(n_bars=3000, seed=3))
    if perturb_test:
        test_start = int(len(bars) * 0.85)
        scale = np.ones(len(bars))
        scale[test_start:] = 1.5  # a different market in the test split only
        for column in ("open", "high", "low", "close"):
            bars[column] = bars[column] * scale
    path = tmp_path / f"{name}.csv"
    frame = bars[["open", "high", "low", "close"]].copy()
    frame.index = pd.DatetimeIndex(frame.index).tz_convert("UTC").tz_localize(None)
    frame.index.name = "timestamp"
    frame.to_csv(path)
    return path


def test_fold_windows_are_purged_embargoed_and_never_reach_the_test_split(tmp_path):
    path = _bars_file(tmp_path, "bars")
    plain = DataManager(DataConfig(source=str(path), format="csv"), windows={"1h": 16})
    folds = [
        DataManager(
            DataConfig(source=str(path), format="csv", n_folds=3, fold=k, embargo_bars=5),
            windows={"1h": 16},
        )
        for k in range(3)
    ]
    test_start = plain.splits["test"].start
    assert all(f.splits["test"] == plain.splits["test"] for f in folds)
    for k, fold in enumerate(folds):
        train_split, val_split = fold.splits["train"], fold.splits["val"]
        assert val_split.start - train_split.end == plain.gap + 5  # purge + embargo
        assert val_split.end <= test_start - plain.gap
        if k:
            assert val_split.start == folds[k - 1].splits["val"].end  # walk forward
    assert folds[-1].splits["val"].end == plain.splits["val"].end


def test_perturbing_the_test_bars_changes_no_fold_score(tmp_path):
    spec = ObjectiveSpec(folds=2)
    scores = []
    for name, perturb in (("clean", False), ("perturbed", True)):
        config = tiny_fx_config(
            tmp_path / name,
            data={"source": str(_bars_file(tmp_path, name, perturb)), "format": "csv",
                  "symbol": "EURUSD"},
            trainer={"val_episodes": 2},
        )
        study = optuna.create_study(direction="maximize")
        trial = study.ask()
        scores.append((score_trial(trial, config, spec), trial.user_attrs["fold_scores"]))
    assert scores[0] == scores[1]
    assert len(scores[0][1]) == 2 and scores[0][0] == [pytest.approx(np.mean(scores[0][1]))]


class _Threshold(optuna.pruners.ThresholdPruner):
    pass


@pytest.mark.parametrize("prune", [True, False])
def test_pruning_continues_across_folds(tmp_path, prune):
    """Fold k's i-th validation is reported at step k * V + i; the pruner may stop the trial
    in any fold (here: at the first step of fold 1) or let it finish every fold."""
    config = tiny_fx_config(tmp_path, trainer={"val_episodes": 2})
    validations_per_fold = 2  # 4 iterations, validation every 2
    pruner = optuna.pruners.ThresholdPruner(
        lower=np.inf if prune else -np.inf, n_warmup_steps=validations_per_fold
    )
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    spec = ObjectiveSpec(folds=2)
    if prune:
        with pytest.raises(optuna.TrialPruned):
            score_trial(trial, config, spec)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        assert sorted(study.trials[0].intermediate_values) == [0, 1, 2]
    else:
        value = score_trial(trial, config, spec)
        study.tell(trial, value)
        assert sorted(study.trials[0].intermediate_values) == [0, 1, 2, 3]
        fold_scores = study.trials[0].user_attrs["fold_scores"]
        steps = study.trials[0].intermediate_values
        assert [row[0] for row in fold_scores] == pytest.approx([steps[1], steps[3]], rel=1e-6)
        returns = decode_returns(study.trials[0].user_attrs["val_returns"])
        assert returns.size > 0


def test_several_seeds_record_their_scores_and_spread(tmp_path):
    config = tiny_fx_config(tmp_path, trainer={"val_episodes": 2})
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    (value,) = score_trial(trial, config, ObjectiveSpec(), seeds_per_trial=2)
    seed_scores = [row[0] for row in trial.user_attrs["seed_scores"]]
    assert trial.user_attrs["seeds"] == [0, 1] and len(seed_scores) == 2
    assert value == pytest.approx(np.mean(seed_scores))
    assert trial.user_attrs["seed_spread"][0] == pytest.approx(np.std(seed_scores, ddof=1))


def test_study_files_take_folds_and_embargo(tmp_path):
    path = write_tiny_study(tmp_path, "folds", objective={"folds": 3, "embargo_bars": 4})
    study = load_study_config(path)
    assert study.objective == ObjectiveSpec(folds=3, embargo_bars=4)
    bad = write_tiny_study(tmp_path, "badfolds", objective={"folds": 0})
    with pytest.raises(StudyError, match=r"objective\.folds: got 0; valid: an integer >= 1"):
        load_study_config(bad)
    text = yaml.safe_load(path.read_text())
    assert text["objective"]["folds"] == 3


# -- overfitting statistics of the whole search -----------------------------------------------


def _study_of(returns_by_trial):
    from fxai_tune.tune import encode_returns

    study = optuna.create_study(direction="maximize")
    for returns in returns_by_trial:
        study.add_trial(optuna.trial.create_trial(
            value=float(np.sum(returns)),
            user_attrs={"val_returns": encode_returns(returns)},
        ))
    return study


def test_a_search_over_noise_is_not_significant_and_overfits():
    from fxai_tune.tune import search_statistics, statistics_lines

    rng = np.random.default_rng(0)
    pbos = []
    for _ in range(3):
        stats = search_statistics(_study_of(rng.normal(0, 1e-3, (40, 720))))
        assert stats["deflated_sharpe_ratio"] < 0.95
        pbos.append(stats["probability_of_backtest_overfitting"])
    assert np.mean(pbos) > 0.3
    assert any("No edge found" in line for line in statistics_lines(stats))


def test_a_dominant_configuration_is_significant_and_does_not_overfit():
    from fxai_tune.tune import search_statistics, statistics_lines

    rng = np.random.default_rng(1)
    returns = rng.normal(0, 1e-3, (40, 720))
    returns[7] += 3e-4  # one configuration with a real per-bar edge (Sharpe 0.3 per bar)
    stats = search_statistics(_study_of(returns))
    assert stats["best_trial"] == 7
    assert stats["deflated_sharpe_ratio"] > 0.95
    assert stats["probability_of_backtest_overfitting"] < 0.1
    assert not any("No edge found" in line for line in statistics_lines(stats))


def test_the_deflated_sharpe_ratio_falls_as_the_search_tries_more_trials():
    """Pruned trials were looks at the data too: the same completed trials with more pruned
    ones beside them deflate the best Sharpe more."""
    from fxai_tune.tune import search_statistics

    rng = np.random.default_rng(2)
    completed = [rng.normal(2e-4, 1e-3, 720), *rng.normal(0, 1e-3, (20, 720))]
    values = []
    for n_pruned in (0, 20, 200):
        study = _study_of(completed)
        for _ in range(n_pruned):
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED, intermediate_values={0: 0.0}))
        stats = search_statistics(study)
        assert stats["n_trials"] == 21 + n_pruned
        values.append(stats["deflated_sharpe_ratio"])
    assert values[0] > values[1] > values[2]


def test_status_json_names_the_statistics_and_the_study_names_its_metrics(tmp_path):
    import json

    path = write_tiny_study(tmp_path, "stats", n_trials=3)
    done = subprocess.run([*CLI, "run", "--study", str(path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Deflated Sharpe Ratio" in done.stdout and "Probability of Backtest" in done.stdout
    status = subprocess.run([*CLI, "status", "--study", str(path), "--json"],
                            capture_output=True, text=True, timeout=300)
    summary = json.loads(status.stdout)
    overfitting = summary["overfitting"]
    assert overfitting["n_trials"] == 3 and overfitting["n_trials_with_returns"] == 3
    assert 0.0 <= overfitting["deflated_sharpe_ratio"] <= 1.0
    assert 0.0 <= overfitting["probability_of_backtest_overfitting"] <= 1.0
    study = optuna.load_study(study_name="stats", storage=f"sqlite:///{tmp_path / 'stats.db'}")
    assert study.metric_names == ["val/episode_reward"]
    from optuna_dashboard import get_note

    assert "Deflated Sharpe Ratio" in get_note(study)


def _planted_signal_study(tmp_path, name, signal_strength):
    """Eight random-sampled trials on the shipped planted-signal config, at ``signal_strength``
    (0: a pure-noise market); learning rates down to 1e-6, where an agent barely moves."""
    base = yaml.safe_load(open(PACKAGE_DIR / "studies" / "configs" / "signal_base.yaml"))
    base["data"]["synthetic"]["signal_strength"] = signal_strength
    base["run_dir"] = str(tmp_path / f"runs_{name}")
    study = {
        "name": name,
        "base": base,
        "search_space": {"params": {
            "ppo.learning_rate": {"type": "float", "low": 1e-6, "high": 3e-3, "log": True},
            "ppo.gamma": {"type": "float", "low": 0.05, "high": 0.9},
        }},
        "objective": {"metrics": ["val/episode_reward"], "reduce": "last"},
        "budget": {"total_timesteps": 8192, "val_every_n_iterations": 4},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "n_trials": 8,
        "storage": f"sqlite:///{tmp_path / (name + '.db')}",
        "artifact_dir": str(tmp_path / f"artifacts_{name}"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_search_on_noise_and_on_a_planted_signal_report_what_each_market_holds(tmp_path):
    """End to end through `fxai-tune run` and `status --json`: real PPO trials on a market
    with no signal find no edge; on the same market with a planted AR(1) signal the best
    trial is significant and the selection does not overfit."""
    import json

    outcomes = {}
    for name, strength in (("noise", 0.0), ("signal", 0.5)):
        path = _planted_signal_study(tmp_path, name, strength)
        done = subprocess.run([*CLI, "run", "--study", str(path)], capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        status = subprocess.run([*CLI, "status", "--study", str(path), "--json"],
                                capture_output=True, text=True, timeout=300)
        outcomes[name] = (done.stdout, json.loads(status.stdout)["overfitting"])
    noise_output, noise = outcomes["noise"]
    signal_output, signal = outcomes["signal"]
    assert noise["n_trials_with_returns"] == signal["n_trials_with_returns"] == 8
    assert noise["deflated_sharpe_ratio"] < 0.95, noise
    assert "No edge found" in " ".join(noise_output.split())
    assert signal["deflated_sharpe_ratio"] > 0.95, signal
    assert "No edge found" not in " ".join(signal_output.split())
    assert signal["probability_of_backtest_overfitting"] < 0.25, signal
    assert noise["probability_of_backtest_overfitting"] > (
        signal["probability_of_backtest_overfitting"] + 0.25), (noise, signal)
