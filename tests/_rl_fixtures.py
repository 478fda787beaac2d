"""Small, fast training configurations shared by the RL tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fxai_tune.rl import TrainConfig, build_train_config


def deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge (update wins)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def tiny_fx_values(run_dir: Path, **sections: Any) -> dict[str, Any]:
    """Nested values of a tiny FX run on a synthetic market (seconds on one CPU core)."""
    values = {
        "seed": 0,
        "run_dir": str(run_dir),
        "data": {"source": "synthetic", "synthetic": {"n_bars": 3000, "seed": 3}},
        "env": {
            "windows": {"1h": 16, "4h": 4},
            "episode_length": 128,
            "curriculum": {"min_episode_length": 32},
        },
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dim_feedforward": 32},
        "ppo": {
            "n_envs": 4,
            "n_steps": 32,
            "batch_size": 64,
            "n_epochs": 2,
            "total_timesteps": 4 * 4 * 32,
        },
        "trainer": {
            "accelerator": "cpu",
            "val_every_n_iterations": 2,
            "enable_progress_bar": False,
            # one thread: two swing widely on these shared machines (docs/benchmarks.md)
            "torch_threads": 1,
        },
    }
    return deep_update(values, sections)


def tiny_fx_config(run_dir: Path, **sections: Any) -> TrainConfig:
    """A validated tiny FX `TrainConfig`; keyword sections are merged into the defaults."""
    return build_train_config(tiny_fx_values(run_dir, **sections))
