"""Assembling and running a training run: Trainer, callbacks, loggers, resume."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    RichProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from fxai_tune.rl._callbacks import (
    CurriculumLearningCallback,
    EpisodeMetricsCallback,
    IterationCheckpoint,
    IterationDeviceStatsMonitor,
    RewardSystemCallback,
    RolloutCollectionCallback,
    ValidateLastIteration,
)
from fxai_tune.rl._config import CurriculumConfig, CurriculumStage, TrainConfig
from fxai_tune.rl._config_io import load_train_config, save_train_config
from fxai_tune.rl._datamodule import RLDataModule
from fxai_tune.rl._module import PPOLightningModule

__all__ = [
    "TrainingRun",
    "build_training",
    "resolve_precision",
    "resume_training",
    "train",
    "uses_gpu",
]

log = logging.getLogger(__name__)

MONITOR = "val/episode_reward"
SAVE_TOP_K = 5
"""Best checkpoints kept (by `MONITOR`), besides ``last.ckpt`` (the seed guide's number)."""
CONFIG_FILE = "config.yaml"


def resolve_precision(precision: str, *, accelerator: str = "auto") -> str:
    """``auto`` -> bf16-mixed when the run is on a CUDA GPU that supports it, else 32-true.

    Args:
        precision: ``trainer.precision``; anything but ``auto`` is returned unchanged.
        accelerator: ``trainer.accelerator``: a run on ``cpu`` (or ``mps``) stays 32-true
            even where a CUDA GPU exists.
    """
    if precision != "auto":
        return precision
    on_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_cuda and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def uses_gpu(accelerator: str) -> bool:
    """Whether a run with ``trainer.accelerator`` asks for a GPU or finds one (``auto``)."""
    if accelerator in ("gpu", "cuda", "mps"):
        return True
    return accelerator == "auto" and (
        torch.cuda.is_available() or torch.backends.mps.is_available()
    )


def resolve_devices(devices: str) -> str | int:
    """Lightning devices: "auto", a count ("1") or a list of indices ("0,1")."""
    return int(devices) if devices.strip().isdigit() else devices


@dataclass
class TrainingRun:
    """The objects of one run, built but not yet fitted."""

    config: TrainConfig
    module: PPOLightningModule
    datamodule: RLDataModule
    trainer: pl.Trainer
    checkpoint: ModelCheckpoint
    run_dir: Path


def _curriculum(config: TrainConfig) -> CurriculumConfig:
    if config.curriculum.enabled:
        return config.curriculum
    return CurriculumConfig(enabled=False, stages=[CurriculumStage(name="full", difficulty=1.0)])


def build_training(
    config: TrainConfig,
    *,
    extra_callbacks: list[Callback] | None = None,
    loggers: bool = True,
    checkpointing: bool = True,
) -> TrainingRun:
    """Build the module, datamodule, callbacks and Trainer of ``config`` (nothing runs yet).

    Args:
        config: The run's configuration; ``config.run_dir`` receives checkpoints and logs.
        extra_callbacks: More callbacks (the tuner adds its pruning callback here).
        loggers: Attach TensorBoard and CSV loggers.
        checkpointing: Save checkpoints at the end of each validated iteration: the
            `SAVE_TOP_K` best on `val/episode_reward` (``ppo-<iteration>-<reward>.ckpt``) and
            ``last.ckpt``.
    """
    pl.seed_everything(config.seed, workers=True, verbose=False)
    if "spawn" in config.trainer.strategy:
        # the datamodule's tensors travel to the spawned ranks; the default fd-passing
        # sharing strategy fails on them ("bad value(s) in fds_to_keep")
        torch.multiprocessing.set_sharing_strategy("file_system")
    if config.trainer.torch_threads is not None:
        torch.set_num_threads(config.trainer.torch_threads)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_train_config(config, run_dir / CONFIG_FILE)

    log.info("Building RLDataModule (env_id=%s)", config.env_id or "fx")
    datamodule = RLDataModule(config)
    log.info("Building PPOLightningModule")
    module = PPOLightningModule(
        config.ppo, config.model, datamodule.observation_space, datamodule.action_space
    )
    checkpoint = IterationCheckpoint(
        dirpath=run_dir / "checkpoints",
        # the seed guide's name: iteration and validation reward, e.g. ppo-0009-0.123.ckpt
        filename="ppo-{epoch:04d}-{" + MONITOR + ":.3f}",
        monitor=MONITOR,
        mode="max",
        save_top_k=SAVE_TOP_K,
        save_last=True,
        auto_insert_metric_name=False,
    )
    callbacks: list[Callback] = [
        RolloutCollectionCallback(),
        ValidateLastIteration(),
        EpisodeMetricsCallback(),
        RewardSystemCallback(),
        CurriculumLearningCallback(_curriculum(config)),
    ]
    if checkpointing:
        callbacks.append(checkpoint)
    # no LearningRateMonitor: it logs against optimizer steps, before this iteration's schedule
    # step; the module logs train/learning_rate, the rate the update used, at env steps
    if loggers and uses_gpu(config.trainer.accelerator):
        callbacks.append(IterationDeviceStatsMonitor())
    if config.trainer.enable_progress_bar:
        callbacks.append(RichProgressBar())
    if config.trainer.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(
                monitor=MONITOR, mode="max", patience=config.trainer.early_stopping_patience
            )
        )
    callbacks.extend(extra_callbacks or [])
    trainer = pl.Trainer(
        accelerator=config.trainer.accelerator,
        devices=resolve_devices(config.trainer.devices),
        strategy=config.trainer.strategy,
        precision=resolve_precision(
            config.trainer.precision, accelerator=config.trainer.accelerator
        ),
        max_epochs=config.ppo.n_iterations,
        check_val_every_n_epoch=config.trainer.val_every_n_iterations,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        log_every_n_steps=config.trainer.log_every_n_steps,
        deterministic=config.trainer.deterministic,
        benchmark=config.trainer.benchmark,
        callbacks=callbacks,
        logger=[
            TensorBoardLogger(run_dir, name="tensorboard", version=""),
            CSVLogger(run_dir, name="csv", version=""),
        ]
        if loggers
        else False,
        enable_progress_bar=config.trainer.enable_progress_bar,
        enable_model_summary=False,
        enable_checkpointing=checkpointing,
        default_root_dir=run_dir,
    )
    return TrainingRun(config, module, datamodule, trainer, checkpoint, run_dir)


def train(
    config: TrainConfig,
    *,
    extra_callbacks: list[Callback] | None = None,
    ckpt_path: str | Path | None = None,
    loggers: bool = True,
    checkpointing: bool = True,
) -> TrainingRun:
    """Build and fit a run (continuing from ``ckpt_path`` if given); see `build_training`."""
    run = build_training(
        config, extra_callbacks=extra_callbacks, loggers=loggers, checkpointing=checkpointing
    )
    run.trainer.fit(
        run.module,
        datamodule=run.datamodule,
        ckpt_path=str(ckpt_path) if ckpt_path is not None else None,
        weights_only=True if ckpt_path is not None else None,
    )
    last = run.checkpoint.dirpath and Path(run.checkpoint.dirpath) / "last.ckpt"
    if checkpointing and not run.checkpoint.last_model_path and last and last.is_file():
        # ddp_spawn hands only best_model_path back to this process; last.ckpt has a fixed name
        run.checkpoint.last_model_path = str(last)
    return run


def resume_training(run_dir: str | Path, **kwargs: object) -> TrainingRun:
    """Continue a stopped run from its ``last.ckpt`` with its saved config."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"no checkpoint to resume in {str(run_dir)!r}: {last} is missing")
    config = load_train_config(run_dir / CONFIG_FILE)
    return train(config, ckpt_path=last, **kwargs)  # type: ignore[arg-type]
