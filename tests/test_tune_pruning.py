"""The pruning callback on real (tiny) Lightning training runs."""

from __future__ import annotations

import optuna
import pytest
from _rl_fixtures import tiny_fx_config
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from fxai_tune.rl import train
from fxai_tune.tune import OptunaPruningCallback


def _study_with_history(value: float) -> optuna.Study:
    """A study whose three finished trials reported ``value`` at validations 0..3."""
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    for _ in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": 0.5},
                distributions={"x": FloatDistribution(0, 1)},
                value=value,
                intermediate_values={step: value for step in range(4)},
            )
        )
    return study


def _objective(tmp_path):
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        run = train(
            tiny_fx_config(tmp_path / f"t{trial.number}"),
            extra_callbacks=[OptunaPruningCallback(trial)],
            loggers=False,
        )
        return float(run.trainer.callback_metrics["val/episode_reward"])

    return objective


def test_trial_below_the_median_of_good_trials_is_pruned_at_first_validation(tmp_path):
    study = _study_with_history(1e9)  # every earlier trial was far better
    study.optimize(_objective(tmp_path), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]  # reported at validation 0, then pruned


def test_trial_above_the_median_runs_to_completion(tmp_path):
    study = _study_with_history(-1e9)  # every earlier trial was far worse
    study.optimize(_objective(tmp_path), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.COMPLETE
    assert list(trial.intermediate_values) == [0, 1]  # one report per validation
    assert trial.intermediate_values[1] == pytest.approx(trial.value)


def test_unknown_monitor_is_reported_with_the_logged_metrics(tmp_path):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    callback = OptunaPruningCallback(trial, monitor="val/nope")
    with pytest.raises(KeyError, match="val/episode_reward"):
        train(tiny_fx_config(tmp_path), extra_callbacks=[callback], loggers=False)


def test_a_pruned_trial_keeps_the_curve_and_metrics_of_the_validation_it_was_pruned_at(
    tmp_path,
):
    from fxai_tune.tune import ObjectiveSpec, score_trial

    uploaded = []

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        return score_trial(trial, tiny_fx_config(tmp_path / "run"), ObjectiveSpec(),
                           upload=uploaded.append)[0]

    study = _study_with_history(1e9)  # pruned at its first validation
    study.optimize(objective, n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.PRUNED
    assert {path.name for path in uploaded} >= {"val_equity.png", "metrics.csv"}
    assert trial.user_attrs["val_metrics"]["val/episode_reward"] == pytest.approx(
        trial.intermediate_values[0])
    assert trial.user_attrs["env_steps"] > 0
