"""The `fxai-tune run` objective: sample a config and score it (`score_trial`, shared with
the Hydra sweeper), recording its config, failure reason and wall time.

`recording_outcome`, `check_finite_objective` and `artifact_upload` are what both front doors
(this objective and `fxai_tune.hydra_app.run_task`) wrap around `score_trial`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from fxai_tune.rl import ConfigError, TrainConfig, config_to_dict
from fxai_tune.tune._ranks import spawns_ranks
from fxai_tune.tune._scoring import score_trial
from fxai_tune.tune._study import StudyConfig

__all__ = [
    "TrialObjective",
    "artifact_upload",
    "check_finite_objective",
    "describe_failure",
    "recording_outcome",
]

log = logging.getLogger(__name__)


def describe_failure(error: BaseException) -> str:
    """Short reason recorded on a failed trial: NaN, OOM, config, interrupted or the error."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, FloatingPointError):
        return f"NaN/inf: {text}"
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return f"OOM: {text}"
    if isinstance(error, (ConfigError, ValueError)) and "config" in type(error).__name__.lower():
        return f"config: {text}"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot write artifact {error.filename}: {error.strerror or text}"
    return f"{type(error).__name__}: {text}"


@contextlib.contextmanager
def recording_outcome(trial: optuna.Trial | None) -> Iterator[None]:
    """Record on ``trial`` what every scored trial records, whichever front door runs it:
    ``wall_time_s`` always, ``fail_reason`` when it fails (and ``interrupted`` on Ctrl-C,
    whose parameters `run_worker` queues again). No trial (a plain Hydra run): nothing."""
    started = time.perf_counter()
    try:
        yield
    except optuna.TrialPruned:
        raise
    except (Exception, KeyboardInterrupt) as error:
        if trial is not None:
            if isinstance(error, KeyboardInterrupt):
                trial.set_user_attr("interrupted", True)
            trial.set_user_attr("fail_reason", describe_failure(error))
        raise
    finally:
        if trial is not None:
            trial.set_user_attr("wall_time_s", time.perf_counter() - started)


def check_finite_objective(metrics: Sequence[str], values: Sequence[float]) -> None:
    """Refuse a non-finite objective value: Optuna would record FAIL without a reason.

    Raises:
        FloatingPointError: Naming the first non-finite metric and its value.
    """
    bad = [(m, v) for m, v in zip(metrics, values, strict=True) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"objective {bad[0][0]} = {bad[0][1]}")


def artifact_upload(
    store: FileSystemArtifactStore, trial: optuna.Trial
) -> Callable[[Path], str]:
    """`score_trial`'s ``upload``: one file of ``trial`` into ``store`` (its artifact id)."""
    return lambda path: upload_artifact(
        artifact_store=store, file_path=str(path), study_or_trial=trial
    )


class TrialObjective:
    """Callable objective for `optuna.Study.optimize`.

    Args:
        study: The validated study definition.
        accelerator: Lightning accelerator of this worker ("cpu", "gpu", "auto").
        torch_threads: torch threads per worker on CPU (None leaves torch's default).
    """

    def __init__(
        self, study: StudyConfig, *, accelerator: str = "auto", torch_threads: int | None = None
    ) -> None:
        self.study = study
        self.accelerator = accelerator
        self.torch_threads = torch_threads
        self.artifact_store = FileSystemArtifactStore(str(study.artifact_dir))
        Path(study.artifact_dir).mkdir(parents=True, exist_ok=True)

    @property
    def multi_objective(self) -> bool:
        return len(self.study.directions) > 1

    def trial_config(self, trial: optuna.Trial) -> TrainConfig:
        """Sample this trial's parameters into the study's base config."""
        values, config = self.study.sample_config(trial)
        # one device per worker, unless the study trains each trial with ddp_spawn itself
        ddp = spawns_ranks(config.trainer.strategy)
        trainer = dataclasses.replace(
            config.trainer,
            accelerator=self.accelerator,
            devices=config.trainer.devices if ddp else "1",
            enable_progress_bar=False,
            torch_threads=self.torch_threads,
        )
        run_dir = Path(self.study.artifact_dir) / "runs" / f"trial_{trial.number:05d}"
        return dataclasses.replace(config, trainer=trainer, run_dir=str(run_dir))

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        with recording_outcome(trial):
            config = self.trial_config(trial)
            trial.set_user_attr("config", config_to_dict(config))
            objective = score_trial(
                trial,
                config,
                self.study.objective,
                seeds_per_trial=self.study.seeds_per_trial,
                upload=artifact_upload(self.artifact_store, trial),
            )
            check_finite_objective(self.study.metrics, objective)
        return objective if self.multi_objective else objective[0]
