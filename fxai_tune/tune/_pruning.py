"""`OptunaPruningCallback`: reports validation reward to a trial and prunes it when told."""

from __future__ import annotations

import copy
from typing import Any

import optuna
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from typing_extensions import override

from fxai_tune.tune._storage import storage_unreachable

__all__ = ["OptunaPruningCallback", "ValidationHistory", "pruned_in_subprocess"]


def pruned_in_subprocess(error: BaseException) -> bool:
    """Whether ``error`` is a spawned DDP rank's `optuna.TrialPruned`, re-raised by torch.

    ``ddp_spawn`` runs training in child processes; torch re-raises their exceptions in the
    parent as ``ProcessRaisedException`` carrying only the child's traceback text.
    """
    from torch.multiprocessing import ProcessRaisedException

    return isinstance(error, ProcessRaisedException) and "optuna.exceptions.TrialPruned" in str(
        error
    )


class ValidationHistory(Callback):
    """Keeps every validation's metrics (``pl_module.last_val_metrics``), its `Evaluation`
    (per-bar record) and the env steps at that point, in order.

    Under ``ddp_spawn`` the trial's process keeps the history: `relayed` gives the copy that
    the spawned ranks run, whose rank 0 sends each validation back.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.evaluations: list[Any] = []
        self.env_steps: list[int] = []
        self._relay: Any = None  # (relay, name) in a spawned rank's copy

    def relayed(self, relay: Any, name: str) -> ValidationHistory:
        """The copy for spawned ranks: it records into this object through ``relay``."""
        stand_in = copy.copy(self)
        stand_in._relay = (relay, name)
        return stand_in

    def record(self, metrics: dict[str, float], evaluation: Any, env_steps: int) -> None:
        """Append one validation."""
        self.history.append(metrics)
        self.evaluations.append(evaluation)
        self.env_steps.append(env_steps)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = (
            dict(pl_module.last_val_metrics),
            getattr(pl_module, "last_evaluation", None),
            int(trainer.datamodule.env_steps),
        )
        if self._relay is None:
            self.record(*row)
        elif trainer.is_global_zero:  # every rank validated the same weights
            relay, name = self._relay
            relay.call(name, "record", *row)


class OptunaPruningCallback(Callback):
    """Reports ``monitor`` to an Optuna trial at every validation and prunes on its verdict.

    The step reported is the validation index (0, 1, 2 ...): the same step of two trials is
    the same point of their budgets, which pruners compare. Lightning's sanity check is
    skipped. Under DDP only rank 0 talks to the trial; its decision is broadcast so every rank
    stops together. Under ``ddp_spawn`` the trial stays in its own process: `relayed` gives
    the copy the spawned ranks run, which asks it there.

    Args:
        trial: The trial being trained.
        monitor: Logged metric to report (the tuner's objective).
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val/episode_reward") -> None:
        self.trial = trial
        self.monitor = monitor
        self.validations = 0
        self._relay: Any = None  # (relay, name) in a spawned rank's copy

    def relayed(self, relay: Any, name: str) -> OptunaPruningCallback:
        """The copy for spawned ranks: it reports through ``relay`` (without the trial)."""
        stand_in = copy.copy(self)
        stand_in.trial = None  # type: ignore[assignment] - an optuna.Trial does not pickle
        stand_in._relay = (relay, name)
        return stand_in

    def report(self, value: float, step: int) -> bool:
        """Report ``value`` at ``step`` to the trial; whether its pruner stops it.

        While the database is away the report is queued and training goes on: the verdict
        waits for the first validation after it is back (issue 11).
        """
        self.trial.report(value, step=step)
        if storage_unreachable(self.trial.study._storage):
            return False
        return self.trial.should_prune()

    def report_from_rank(self, value: float, step: int, validations: int) -> bool:
        """`report` for a spawned rank's copy, which counted ``validations`` so far: the
        next run's copy (the next fold) continues the count, so steps never repeat."""
        self.validations = validations
        return self.report(value, step)

    @property
    def state_key(self) -> str:
        return f"OptunaPruningCallback[{self.monitor}]"

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(
                f"pruning monitors {self.monitor!r}, which was not logged; "
                f"logged metrics: {sorted(trainer.callback_metrics)}"
            )
        step = self.validations
        self.validations += 1
        should_prune = False
        if trainer.is_global_zero:
            if self._relay is None:
                should_prune = self.report(float(value), int(step))
            else:
                relay, name = self._relay
                should_prune = relay.call(
                    name, "report_from_rank", float(value), int(step), self.validations
                )
        should_prune = trainer.strategy.broadcast(should_prune)
        if should_prune:
            raise optuna.TrialPruned(
                f"pruned at validation {self.validations} (step {step}): "
                f"{self.monitor}={float(value):.4g}"
            )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))
