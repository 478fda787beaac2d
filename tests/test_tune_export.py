"""export-best: which trial of a study it writes, and what it says about it."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import yaml
from _rl_fixtures import tiny_fx_values
from _tune_fixtures import write_tiny_study

from fxai_tune.tune import export_best_config, load_study_config

CLI = [sys.executable, "-m", "fxai_tune.cli.main"]
DIRECTIONS = ["maximize", "minimize"]


def _pareto_study(tmp_path):
    """A stored two-objective study: trials 0 and 1 on the Pareto front, 2 dominated."""
    path = write_tiny_study(
        tmp_path, "pareto", directions=DIRECTIONS,
        objective={"metrics": ["val/total_return", "val/max_drawdown"], "reduce": "last"},
    )
    config = load_study_config(path)
    study = optuna.create_study(study_name=config.name, storage=config.storage,
                                directions=DIRECTIONS)
    recorded = tiny_fx_values(tmp_path / "run")
    for values in ([0.1, 0.05], [0.2, 0.1], [0.0, 0.2]):
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs={"config": recorded}))
    return path, study


def test_export_best_takes_the_pareto_trial_asked_for(tmp_path):
    _, study = _pareto_study(tmp_path)
    trial, config = export_best_config(study, tmp_path / "best.yaml", trial=1)
    assert trial.number == 1
    assert config.provenance["trial"] == 1
    assert config.provenance["values"] == [0.2, 0.1]


@pytest.mark.slow  # three CLI runs
def test_export_best_cli_says_which_pareto_trial_it_took_and_takes_trial_n(tmp_path):
    path, _ = _pareto_study(tmp_path)
    out = tmp_path / "best.yaml"
    done = subprocess.run([*CLI, "export-best", "--study", str(path), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "trial 0" in text and "Pareto front of 2 trials [0, 1]" in text and "--trial" in text
    done = subprocess.run(
        [*CLI, "export-best", "--study", str(path), "-o", str(out), "--trial", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(out.read_text())["provenance"]["trial"] == 1
    done = subprocess.run(
        [*CLI, "export-best", "--study", str(path), "-o", str(out), "--trial", "7"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "--trial 7" in done.stderr and "[0, 1, 2]" in done.stderr
