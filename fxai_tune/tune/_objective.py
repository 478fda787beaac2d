"""The Optuna objective: sample a config, train it, report, record, upload artifacts."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from fxai_tune.rl import (
    ConfigError,
    TrainConfig,
    config_to_dict,
    plot_equity,
    train,
)
from fxai_tune.tune._pruning import (
    OptunaPruningCallback,
    ValidationHistory,
    pruned_in_subprocess,
)
from fxai_tune.tune._study import StudyConfig

__all__ = ["TrialObjective", "describe_failure", "reduce_history"]

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
    return f"{type(error).__name__}: {text}"


def reduce_history(
    history: list[dict[str, float]], metric: str, reduce: str, direction: str
) -> float:
    """Best (by ``direction``) or last value of ``metric`` over a run's validations.

    Raises:
        KeyError: When no validation logged ``metric`` (the message lists what was logged).
    """
    values = [h[metric] for h in history if metric in h]
    if not values:
        logged = sorted({k for h in history for k in h})
        raise KeyError(
            f"objective metric {metric!r} was never logged (validations: {len(history)}); "
            f"logged: {logged or 'nothing: raise the budget or lower the validation interval'}"
        )
    if reduce == "last":
        return float(values[-1])
    return float(max(values) if direction == "maximize" else min(values))


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
        values = self.study.space.sample(trial)
        config = self.study.space.apply(self.study.base_config, values)
        # one device per worker, unless the study trains each trial with DDP itself
        ddp = config.trainer.strategy.startswith("ddp")
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
        env_steps = 0
        try:
            config = self.trial_config(trial)
            trial.set_user_attr("config", config_to_dict(config))
            per_seed: list[list[float]] = []
            seeds = [config.seed + k for k in range(self.study.seeds_per_trial)]
            trial.set_user_attr("seeds", seeds)
            for k, seed in enumerate(seeds):
                seed_config = dataclasses.replace(
                    config, seed=seed, run_dir=str(Path(config.run_dir) / f"seed_{seed}")
                )
                history = ValidationHistory()
                callbacks = [history]
                # prune on the first seed only: later seeds run only for trials that survived
                if k == 0 and not self.multi_objective:
                    callbacks.append(OptunaPruningCallback(trial, self.study.metrics[0]))
                try:
                    run = train(seed_config, extra_callbacks=callbacks)
                except Exception as error:
                    if pruned_in_subprocess(error):
                        raise optuna.TrialPruned("pruned in a spawned DDP rank") from error
                    raise
                except SystemExit as exit_:
                    # Lightning turns Ctrl-C into sys.exit(1) after its own clean-up; make it
                    # an interrupt again so Optuna records this trial FAIL and stops.
                    raise KeyboardInterrupt("interrupted during training") from exit_
                finally:
                    env_steps += _env_steps(history)
                    trial.set_user_attr("env_steps", env_steps)
                trial.set_user_attr("device", str(run.module.device))
                per_seed.append(
                    [
                        reduce_history(history.history, metric, self.study.reduce, direction)
                        for metric, direction in zip(
                            self.study.metrics, self.study.directions, strict=True
                        )
                    ]
                )
                if k == 0:
                    self._upload_artifacts(trial, run)
                trial.set_user_attr("val_metrics", history.history[-1])
            objective = np.mean(np.asarray(per_seed), axis=0).tolist()
        except optuna.TrialPruned:
            trial.set_user_attr("wall_time_s", time.perf_counter() - started)
            raise
        except (Exception, KeyboardInterrupt) as error:
            trial.set_user_attr("fail_reason", describe_failure(error))
            trial.set_user_attr("wall_time_s", time.perf_counter() - started)
            raise
        trial.set_user_attr("wall_time_s", time.perf_counter() - started)
        return objective if self.multi_objective else objective[0]

    def _upload_artifacts(self, trial: optuna.Trial, run: Any) -> None:
        """Best checkpoint, validation equity curve and metrics CSV, shown per trial."""
        files: list[Path] = []
        best = run.checkpoint.best_model_path
        if best:
            files.append(Path(best))
        results = getattr(run.module, "last_val_results", None)
        if results and results[0].equity.size > 1:
            files.append(
                plot_equity(
                    {"agent": results[0]},
                    run.run_dir / "val_equity.png",
                    title=f"trial {trial.number}: last validation",
                )
            )
        metrics_csv = run.run_dir / "csv" / "metrics.csv"
        if metrics_csv.is_file():
            files.append(metrics_csv)
        for path in files:
            upload_artifact(
                artifact_store=self.artifact_store, file_path=str(path), study_or_trial=trial
            )


def _env_steps(history: ValidationHistory) -> int:
    return history.env_steps[-1] if history.env_steps else 0
