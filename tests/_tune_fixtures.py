"""Tiny study files for the tuner tests (a few seconds per trial on one core)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import yaml
from _rl_fixtures import tiny_fx_values

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
