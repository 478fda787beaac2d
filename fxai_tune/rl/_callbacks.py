"""Lightning callbacks of a PPO run: rollout collection, episode and reward metrics, curriculum."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, DeviceStatsMonitor, ModelCheckpoint
from typing_extensions import override

from fxai_tune.rl._config import CurriculumConfig

__all__ = [
    "CurriculumLearningCallback",
    "EpisodeMetricsCallback",
    "IterationCheckpoint",
    "IterationDeviceStatsMonitor",
    "RewardSystemCallback",
    "RolloutCollectionCallback",
    "ValidateLastIteration",
]


def _log(pl_module: pl.LightningModule, metrics: dict[str, float]) -> None:
    if metrics:
        pl_module.log_metrics(metrics)


class RolloutCollectionCallback(Callback):
    """Collects a fresh rollout with the current policy before each PPO update and logs
    ``timesteps/total``.

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
        # env steps summed over envs, this rollout included (the x-axis of every metric)
        pl_module.log_metrics({"timesteps/total": float(trainer.datamodule.env_steps)})


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


class IterationDeviceStatsMonitor(DeviceStatsMonitor):
    """Lightning's `DeviceStatsMonitor`, logged after each rollout and each update at env steps.

    The parent logs twice per minibatch against optimizer steps; here every metric shares the
    env-step axis, as ``device/rollout/<stat>`` (after collection) and ``device/update/<stat>``
    (after the update). CPU runs log nothing (the seed guide wants it for GPUs).
    """

    @override
    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    @override
    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_device_stats(trainer, "rollout")

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_device_stats(trainer, "update")

    def log_device_stats(self, trainer: pl.Trainer, phase: str) -> None:
        """Log the accelerator's statistics of the root device as ``device/<phase>/<stat>``."""
        device = trainer.strategy.root_device
        if device.type == "cpu":
            return
        stats = trainer.accelerator.get_device_stats(device)
        metrics = {
            f"device/{phase}/{key}": float(value)
            for key, value in stats.items()
            if isinstance(value, (int, float))
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=int(trainer.datamodule.env_steps))


class EpisodeMetricsCallback(Callback):
    """Logs training-episode statistics: the last rollout's and those of a window.

    ``episode/reward`` and ``episode/length`` average the episodes that ended in the last
    rollout; ``episode/<stat>_mean``, ``episode/reward_std``, ``episode/reward_max`` and
    ``episode/reward_min`` cover the last ``window_size`` episodes; ``episode/count`` is the
    number that ended in the last rollout. The window survives checkpoints.

    Args:
        window_size: Number of recent episodes of the window statistics.
    """

    def __init__(self, window_size: int = 100) -> None:
        self.window: deque[dict[str, float]] = deque(maxlen=window_size)

    @property
    def state_key(self) -> str:
        return "EpisodeMetricsCallback"

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        episodes = trainer.datamodule.drain_episodes()
        self.window.extend(episodes)
        if not self.window:
            return
        metrics = {"episode/count": float(len(episodes))}
        if episodes:
            metrics["episode/reward"] = float(np.mean([e["reward"] for e in episodes]))
            metrics["episode/length"] = float(np.mean([e["length"] for e in episodes]))
        for key in self.window[0]:
            values = [e[key] for e in self.window if key in e]
            metrics[f"episode/{key}_mean"] = float(np.mean(values))
        rewards = [e["reward"] for e in self.window]
        metrics["episode/reward_std"] = float(np.std(rewards))
        metrics["episode/reward_max"] = float(np.max(rewards))
        metrics["episode/reward_min"] = float(np.min(rewards))
        if "wins" in self.window[0]:
            wins = sum(e["wins"] for e in self.window)
            closed = wins + sum(e["losses"] for e in self.window)
            metrics["episode/win_rate_mean"] = wins / closed if closed else 0.0
        _log(pl_module, metrics)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"window": [dict(e) for e in self.window]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.window.clear()
        self.window.extend(state_dict.get("window", []))


class RewardSystemCallback(Callback):
    """Logs the reward per env step of the last rollout and of each raw component.

    ``reward/total`` is the mean reward the agent received per env step (all weighted
    components, as scaled); ``reward/<name>_mean`` and ``reward/<name>_std`` are the mean and
    standard deviation of a raw component over the rollout's env steps, and ``reward/<name>``
    is its mean again (the seed guide logs both names).
    """

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        metrics = {"reward/total": float(datamodule.buffer.rewards.mean())}
        for name, (mean, std) in datamodule.drain_reward_components().items():
            metrics[f"reward/{name}"] = mean
            metrics[f"reward/{name}_mean"] = mean
            metrics[f"reward/{name}_std"] = std
        _log(pl_module, metrics)


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
