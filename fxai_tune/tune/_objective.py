"""The `fxai-tune run` objective: sample a config and score it (`score_trial`, shared with
the Hydra sweeper), recording its config, failure reason and wall time."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from fxai_tune.rl import ConfigError, TrainConfig, config_to_dict
from fxai_tune.tune._ranks import spawns_ranks
from fxai_tune.tune._scoring import score_trial
from fxai_tune.tune._study import StudyConfig

__all__ = ["TrialObjective", "describe_failure"]

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
        started = time.perf_counter()
        try:
            config = self.trial_config(trial)
            trial.set_user_attr("config", config_to_dict(config))
            objective = score_trial(
                trial,
                config,
                self.study.objective,
                seeds_per_trial=self.study.seeds_per_trial,
                upload=lambda path: upload_artifact(
                    artifact_store=self.artifact_store, file_path=str(path),
                    study_or_trial=trial,
                ),
            )
        except optuna.TrialPruned:
            trial.set_user_attr("wall_time_s", time.perf_counter() - started)
            raise
        except (Exception, KeyboardInterrupt) as error:
            if isinstance(error, KeyboardInterrupt):  # `run_worker` queues its parameters again
                trial.set_user_attr("interrupted", True)
            trial.set_user_attr("fail_reason", describe_failure(error))
            trial.set_user_attr("wall_time_s", time.perf_counter() - started)
            raise
        trial.set_user_attr("wall_time_s", time.perf_counter() - started)
        bad = [(m, v) for m, v in zip(self.study.metrics, objective) if not math.isfinite(v)]
        if bad:
            # Optuna would record FAIL without a reason; say which metric (issue 11)
            reason = f"NaN/inf: objective {bad[0][0]} = {bad[0][1]}"
            trial.set_user_attr("fail_reason", reason)
            raise FloatingPointError(reason)
        return objective if self.multi_objective else objective[0]
