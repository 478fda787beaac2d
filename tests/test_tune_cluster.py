"""Workers started by a cluster scheduler (issue 14): late workers, the shipped job files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from _tune_fixtures import write_tiny_study

from fxai_tune.tune import load_study_config, open_study

CLI = [sys.executable, "-m", "fxai_tune.cli.main"]
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_worker_started_after_the_cap_exits_0_with_one_line(tmp_path):
    path = write_tiny_study(tmp_path, "done", n_trials=1)
    study = open_study(load_study_config(path))
    log_float = optuna.distributions.FloatDistribution
    study.add_trial(optuna.trial.create_trial(
        params={"ppo.learning_rate": 1e-3, "ppo.ent_coef": 1e-3},
        distributions={"ppo.learning_rate": log_float(1e-4, 3e-3, log=True),
                       "ppo.ent_coef": log_float(1e-4, 3e-2, log=True)},
        value=1.0,
    ))
    result = subprocess.run(
        [*CLI, "worker", "--study", str(path), "--accelerator", "cpu"],
        capture_output=True, text=True, timeout=120, env=os.environ,
    )
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 0 and len(lines) == 1, lines
    assert "already has its 1 trial" in lines[0]
    assert len(study.get_trials()) == 1


def test_slurm_array_runs_one_worker_per_task_with_its_index():
    script = (DEPLOY / "slurm" / "workers.sbatch").read_text()
    assert "#SBATCH --array=" in script and "#SBATCH --gpus-per-task=1" in script
    assert "fxai-tune worker" in script and "--worker-index" in script
    assert "SLURM_ARRAY_TASK_ID" in script


def test_kubernetes_job_runs_parallel_workers_with_the_url_from_a_secret():
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "workers.yaml").read_text()))
    job = next(d for d in documents if d["kind"] == "Job")
    assert job["spec"]["parallelism"] > 1 and job["spec"]["completionMode"] == "Indexed"
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["FXAI_TUNE_STORAGE"]["valueFrom"]
    assert not any("STORAGE" in arg or "--storage" in arg for arg in container["args"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "worker" in container["args"]
