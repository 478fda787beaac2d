"""Tiny study files for the tuner tests (a few seconds per trial on one core)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from _rl_fixtures import tiny_fx_values
from optuna.trial import TrialState

from fxai_tune.tune import load_study_config, open_study

CLI = [sys.executable, "-m", "fxai_tune.cli.main"]

POSTGRES_URL = os.environ.get(
    "FXAI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FXAI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def write_tiny_study(
    tmp_path: Path,
    name: str,
    *,
    storage: str | None = None,
    total_timesteps: int = 4 * 4 * 32,
    **fields: Any,
) -> Path:
    """Write a study over the tiny synthetic FX config and return its path."""
    base = tiny_fx_values(tmp_path / "unused-run-dir")
    base["trainer"].update(torch_threads=1)
    study = {
        "name": name,
        "base": base,
        "search_space": {
            "params": {
                "ppo.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
                "ppo.ent_coef": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
            }
        },
        "budget": {"total_timesteps": total_timesteps, "val_every_n_iterations": 2},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "n_trials": 3,
        "storage": storage or f"sqlite:///{tmp_path / (name + '.db')}",
        "artifact_dir": str(tmp_path / "artifacts"),
        **fields,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def unique_name(prefix: str) -> str:
    """A study name no other test run uses (shared PostgreSQL)."""
    return f"{prefix}_{os.getpid()}_{os.urandom(3).hex()}"


def default_sigint() -> None:
    """`preexec_fn` for workers a test interrupts: a shell's background job (`cmd &`) starts
    with SIGINT ignored, and Python then never raises KeyboardInterrupt; restore the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_worker(path: Path, *extra: str, url: str | None = None) -> subprocess.Popen:
    """`fxai-tune worker` on a study file as a child process, one thread, output captured."""
    command = [*CLI, "worker", "--study", str(path), "--accelerator", "cpu", "--threads", "1"]
    if url is not None:
        command += ["--storage", url]
    return subprocess.Popen(
        [*command, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=default_sigint,
    )


def wait_for_sampled_trial(
    study: optuna.Study, state: TrialState = TrialState.RUNNING, timeout: float = 180
) -> list[optuna.trial.FrozenTrial]:
    """The trials in `state`, once one has sampled its parameters (the `config` attr is set
    after sampling: a trial caught before that has no parameters yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials = study.get_trials(states=(state,))
        if any("config" in t.user_attrs for t in trials):
            return [t for t in trials if "config" in t.user_attrs]
        time.sleep(0.2)
    raise AssertionError(f"no trial reached {state.name} with its parameters sampled")


def assert_two_workers_stop_at_the_cap(tmp_path: Path, storage: str, name: str) -> None:
    """Two worker processes on one study of cap 4: exactly 4 trials, numbers 0-3, all
    complete, both workers used, no parameters run twice."""
    path = write_tiny_study(
        tmp_path, unique_name(name), storage=storage, n_trials=4, heartbeat_interval=2
    )
    workers = [start_worker(path, "--worker-index", str(i)) for i in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = open_study(load_study_config(path)).get_trials()
    assert sorted(t.number for t in trials) == list(range(4))  # exactly the cap, no duplicates
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # really shared
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
