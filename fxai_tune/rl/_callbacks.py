"""Lightning callbacks of a PPO run: rollout collection, episode and reward metrics, curriculum."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from typing_extensions import override

from fxai_tune.rl._config import CurriculumConfig

__all__ = [
    "CurriculumLearningCallback",
    "EpisodeMetricsCallback",
    "IterationCheckpoint",
    "RewardSystemCallback",
    "RolloutCollectionCallback",
    "ValidateLastIteration",
]


def _log(pl_module: pl.LightningModule, metrics: dict[str, float]) -> None:
    if metrics:
        pl_module.log_metrics(metrics)


class RolloutCollectionCallback(Callback):
    """Collects a fresh rollout with the current policy before each PPO update.

    The rollout runs under the Trainer's precision (the autocast of ``bf16-mixed`` and
    ``16-mixed``), as the update does: the log-probabilities of the PPO ratio come from the
    same arithmetic on both sides.
    """

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.datamodule.to_device(pl_module.device)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with trainer.precision_plugin.forward_context():
            trainer.datamodule.collect_rollout(pl_module.policy)


class ValidateLastIteration(Callback):
    """Validates the last PPO iteration as well as every ``check_val_every_n_epoch``-th.

    Lightning validates only epochs that are multiples of the interval, so the iterations
    after the last multiple would never be scored or checkpointed.
    """

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            trainer.check_val_every_n_epoch = 1


class IterationCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that saves at the end of every validated PPO iteration.

    At the end of the whole iteration (after validation and the epoch-end hooks), so a
    resumed run restarts cleanly at the next iteration; only iterations that were validated,
    so the monitored value is this iteration's (Lightning keeps the last logged value in
    ``callback_metrics``, which would rank an unvalidated iteration by a stale score).

    Args:
        **kwargs: `ModelCheckpoint` arguments other than ``every_n_epochs`` and
            ``save_on_train_epoch_end``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(every_n_epochs=1, save_on_train_epoch_end=True, **kwargs)
        self._validated_epoch: int | None = None

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._validated_epoch == trainer.current_epoch:
            super().on_train_epoch_end(trainer, pl_module)


class EpisodeMetricsCallback(Callback):
    """Logs training-episode statistics: the last rollout's and means over a window.

    Args:
        window_size: Number of recent episodes the ``*_mean`` metrics average over.
    """

    def __init__(self, window_size: int = 100) -> None:
        self.window: deque[dict[str, float]] = deque(maxlen=window_size)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        episodes = trainer.datamodule.drain_episodes()
        self.window.extend(episodes)
        if not self.window:
            return
        metrics = {"episode/count": float(len(episodes))}
        for key in self.window[0]:
            values = [e[key] for e in self.window if key in e]
            metrics[f"episode/{key}_mean"] = float(np.mean(values))
        rewards = [e["reward"] for e in self.window]
        metrics["episode/reward_std"] = float(np.std(rewards))
        if "wins" in self.window[0]:
            wins = sum(e["wins"] for e in self.window)
            closed = wins + sum(e["losses"] for e in self.window)
            metrics["episode/win_rate_mean"] = wins / closed if closed else 0.0
        _log(pl_module, metrics)


class RewardSystemCallback(Callback):
    """Logs the mean raw value of each reward component per env step (``reward/<name>``)."""

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        means = trainer.datamodule.drain_reward_components()
        _log(pl_module, {f"reward/{name}": value for name, value in means.items()})


class CurriculumLearningCallback(Callback):
    """Promotes the training env to the next difficulty stage on validation reward.

    A stage is promoted when ``val/episode_reward`` reaches its ``promotion_threshold`` after
    at least ``min_validations_per_stage`` validations in it. The stage index is logged as
    ``curriculum/stage`` and kept in checkpoints.

    Args:
        config: Stages and promotion rule.
        monitor: Metric compared with the thresholds.
    """

    def __init__(self, config: CurriculumConfig, *, monitor: str = "val/episode_reward") -> None:
        self.config = config
        self.monitor = monitor
        self.stage = 0
        self.validations_in_stage = 0

    @property
    def state_key(self) -> str:
        return "CurriculumLearningCallback"

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)

    @override
    def on_validation_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        if trainer.sanity_checking:
            return
        value = pl_module.last_val_metrics.get(self.monitor)
        if value is None:
            available = sorted(pl_module.last_val_metrics)
            raise KeyError(f"curriculum monitors {self.monitor!r}; logged metrics: {available}")
        self.validations_in_stage += 1
        threshold = self.config.threshold(self.stage)
        if (
            threshold is not None
            and self.validations_in_stage >= self.config.min_validations_per_stage
            and float(value) >= threshold
        ):
            self.stage += 1
            self.validations_in_stage = 0
            self._apply(trainer, pl_module)
        stage = self.config.stages[self.stage]
        pl_module.log_metrics(
            {"curriculum/stage": float(self.stage), "curriculum/difficulty": stage.difficulty}
        )

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.datamodule.set_difficulty(self.config.stages[self.stage].difficulty)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "validations_in_stage": self.validations_in_stage}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stage = int(state_dict.get("stage", 0))
        self.validations_in_stage = int(state_dict.get("validations_in_stage", 0))
