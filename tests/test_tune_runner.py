"""The tuner end to end: trials, records, artifacts, failures, export, CLI errors."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import optuna
import pytest
from _tune_fixtures import write_tiny_study
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from fxai_tune.rl import load_train_config, train
from fxai_tune.tune import (
    FailureRateExceeded,
    export_best_config,
    load_study_config,
    open_study,
    run_worker,
    study_status,
)
from fxai_tune.tune import ValidationHistory, decode_returns

CLI = [sys.executable, "-m", "fxai_tune.cli.main"]


def test_tiny_study_records_configs_metrics_and_artifacts(tmp_path):
    config = load_study_config(write_tiny_study(tmp_path, "e2e"))
    counts = run_worker(config, accelerator="cpu", torch_threads=1)
    assert counts.complete == 3 and counts.counted == 3

    study = open_study(config)
    for trial in study.trials:
        attrs = trial.user_attrs
        assert attrs["config"]["ppo"]["learning_rate"] == trial.params["ppo.learning_rate"]
        assert attrs["env_steps"] == 4 * 4 * 32
        assert attrs["wall_time_s"] > 0
        assert attrs["device"] == "cpu"
        assert "val/episode_reward" in attrs["val_metrics"]
        last_step = max(trial.intermediate_values)
        assert trial.value == pytest.approx(
            trial.intermediate_values[last_step]
        )  # objective: the last validation's reward, the model export-best reproduces
        assert attrs["val_metrics"]["val/episode_reward"] == pytest.approx(trial.value)
        assert attrs["fold_scores"] == [[pytest.approx(trial.value)]]
        returns = decode_returns(attrs["val_returns"])
        assert returns.size == attrs["val_metrics"]["val/length"]
        # val/episode_reward is the pass's net log return: the sum of the stored returns
        assert returns.sum() == pytest.approx(trial.value, abs=1e-5)
        names = {meta.filename for meta in get_all_artifact_meta(trial, storage=study._storage)}
        assert {"val_equity.png", "metrics.csv"} <= names
        assert any(name.endswith(".ckpt") for name in names)

    rerun = run_worker(config, accelerator="cpu")  # same command again: nothing more to do
    assert rerun.counted == 3


def test_export_best_then_train_reproduces_the_trial_reward(tmp_path):
    config = load_study_config(write_tiny_study(tmp_path, "export", n_trials=2))
    run_worker(config, accelerator="cpu", torch_threads=1)
    study = open_study(config)
    trial, _ = export_best_config(study, tmp_path / "best.yaml", run_dir=str(tmp_path / "re"))

    history = ValidationHistory()
    train(load_train_config(tmp_path / "best.yaml"), extra_callbacks=[history], loggers=False)
    rewards = [h["val/episode_reward"] for h in history.history]
    # same config, seed and threads: the same validation rewards, hence the same objective
    # (the last of them), to float32 logging precision
    assert rewards == pytest.approx(list(trial.intermediate_values.values()), rel=1e-6)
    assert rewards[-1] == pytest.approx(trial.value, rel=1e-6, abs=1e-9)
    exported = load_train_config(tmp_path / "best.yaml")
    assert exported.provenance["trial"] == trial.number
    assert exported.provenance["values"] == [trial.value]
    assert exported.provenance["search"]["n_trials"] == 2
    assert exported.provenance["search"]["deflated_sharpe_ratio"] is not None


def test_other_seeds_land_within_the_recorded_spread(tmp_path):
    """seeds_per_trial: 3 records each seed's score and their spread; a retrain with a seed
    the study used reproduces that seed's score exactly."""
    config = load_study_config(
        write_tiny_study(tmp_path, "seeds", n_trials=1, seeds_per_trial=3)
    )
    run_worker(config, accelerator="cpu", torch_threads=1)
    (trial,) = open_study(config).trials
    seed_scores = [row[0] for row in trial.user_attrs["seed_scores"]]
    spread = trial.user_attrs["seed_spread"][0]
    assert trial.value == pytest.approx(np.mean(seed_scores))
    assert spread == pytest.approx(np.std(seed_scores, ddof=1))
    export_best_config(open_study(config), tmp_path / "best.yaml", run_dir=str(tmp_path / "re"))
    retrain = load_train_config(tmp_path / "best.yaml", ["seed=2"])
    history = ValidationHistory()
    train(retrain, extra_callbacks=[history], loggers=False)
    assert history.history[-1]["val/episode_reward"] == pytest.approx(seed_scores[2], rel=1e-6)
    assert abs(history.history[-1]["val/episode_reward"] - trial.value) <= 3 * spread + 1e-12


class _NaNEnv(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.full(2, np.nan, np.float32), 0.0, False, False, {}


def test_failing_trials_are_recorded_and_stop_the_study_past_the_failure_limit(tmp_path):
    gym.register("FxaiTunerNaN-v0", entry_point=_NaNEnv)
    path = write_tiny_study(tmp_path, "failing", n_trials=10, max_failure_rate=0.5)
    text = path.read_text().replace("seed: 0\n", "seed: 0\n  env_id: FxaiTunerNaN-v0\n", 1)
    path.write_text(text)
    config = load_study_config(path)
    with pytest.raises(FailureRateExceeded, match=r"3 of 3 finished trials failed .*NaN"):
        run_worker(config, accelerator="cpu")
    trials = open_study(config).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert all(t.user_attrs["fail_reason"].startswith("NaN/inf:") for t in trials)
    status = study_status(open_study(config))
    assert status["trials"]["failed"] == 3 and status["failures"][0]["reason"].startswith("NaN")


def test_bad_study_file_is_a_one_line_error_with_exit_code_2(tmp_path):
    path = write_tiny_study(tmp_path, "bad", sampler={"name": "tpee"})
    result = subprocess.run(
        [*CLI, "run", "--study", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "tpee" in lines[0] and "tpe" in lines[0] and "bad.yaml" in lines[0]


def test_bad_storage_url_is_rejected_without_touching_the_study(tmp_path):
    path = write_tiny_study(tmp_path, "badurl")
    result = subprocess.run(
        [*CLI, "status", "--study", str(path), "--storage", "postgres://u:secret@h/db"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "secret" not in result.stderr and "postgresql" in result.stderr


def test_status_json_lists_trials_by_state(tmp_path):
    config = load_study_config(write_tiny_study(tmp_path, "status", n_trials=1))
    run_worker(config, accelerator="cpu")
    result = subprocess.run(
        [*CLI, "status", "--study", str(config.path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    import json

    status = json.loads(result.stdout[result.stdout.index("{") :])
    assert status["trials"]["complete"] == 1
    assert status["best"][0]["number"] == 0
    assert len(status["workers"]) == 1


def test_multi_objective_study_records_pareto_values(tmp_path):
    path = write_tiny_study(
        tmp_path,
        "pareto",
        n_trials=2,
        directions=["maximize", "minimize"],
        objective={"metrics": ["val/total_return", "val/max_drawdown"], "reduce": "last"},
    )
    config = load_study_config(path)
    run_worker(config, accelerator="cpu", torch_threads=1)
    study = open_study(config)
    assert all(len(t.values) == 2 for t in study.trials)
    assert study.best_trials


def test_several_seeds_per_trial_average_the_objective(tmp_path):
    config = load_study_config(write_tiny_study(tmp_path, "seeds", n_trials=1, seeds_per_trial=2))
    run_worker(config, accelerator="cpu", torch_threads=1)
    (trial,) = open_study(config).trials
    assert trial.user_attrs["seeds"] == [0, 1]
    assert trial.user_attrs["env_steps"] == 2 * 4 * 4 * 32
    assert trial.state == TrialState.COMPLETE


def test_worker_without_a_cap_starts_trials_until_its_timeout(tmp_path):
    config = load_study_config(write_tiny_study(tmp_path, "timed", n_trials=None, timeout=1))
    counts = run_worker(config, accelerator="cpu", torch_threads=1)
    assert counts.complete >= 1 and counts.counted == counts.complete


@pytest.mark.slow  # the run command with its worker process: ~30 s on a shared machine
def test_timeout_only_study_runs_trials_until_its_timeout(tmp_path):
    # n_trials: null, timeout: S is a valid study: no cap, each worker stops starting trials
    # after S seconds (issue 12: `--n-trials None` reached the worker)
    path = write_tiny_study(tmp_path, "timed", n_trials=None, timeout=3)
    done = subprocess.run([*CLI, "run", "--study", str(path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cap None" not in done.stdout
    study = open_study(load_study_config(path))
    states = [t.state for t in study.trials]
    assert states and set(states) == {TrialState.COMPLETE}, states  # started within 3 s


def test_both_front_doors_record_a_trials_wall_time_and_failure_reason():
    from fxai_tune.tune import check_finite_objective, recording_outcome

    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(FloatingPointError), recording_outcome(trial):
        check_finite_objective(["val/sharpe"], [float("nan")])
    assert trial.user_attrs["fail_reason"] == "NaN/inf: objective val/sharpe = nan"
    assert trial.user_attrs["wall_time_s"] >= 0
    pruned = study.ask()
    with pytest.raises(optuna.TrialPruned), recording_outcome(pruned):
        raise optuna.TrialPruned
    assert "fail_reason" not in pruned.user_attrs and "wall_time_s" in pruned.user_attrs
    with recording_outcome(None):  # a plain Hydra run has no trial: nothing recorded
        check_finite_objective(["val/sharpe"], [1.0])
