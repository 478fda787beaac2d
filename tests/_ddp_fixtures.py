"""A callback that records what each DDP rank did (importable by spawned ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class RankProbe(Callback):
    """Writes ``rank_<r>.json`` in ``directory``: each iteration's rollout actions and the
    minibatches the update evaluated and stepped. In iteration 0, rank ``skew_rank``'s stored
    log-probabilities are shifted by ``skew``, so its first minibatch alone exceeds any
    target KL."""

    def __init__(self, directory: Path, *, skew_rank: int = 1, skew: float = 5.0) -> None:
        self.directory = Path(directory)
        self.skew_rank = skew_rank
        self.skew = skew
        self.actions: list[list[int]] = []
        self.updates: list[tuple[int, int]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after RolloutCollectionCallback (an extra callback comes later): this rollout
        buffer = trainer.datamodule.buffer
        self.actions.append(buffer.actions.flatten().tolist())
        if trainer.current_epoch == 0 and trainer.global_rank == self.skew_rank:
            buffer.log_probs -= self.skew

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # callbacks run before the module's hook, which resets the counts
        self.updates.append((pl_module._n_minibatches, pl_module._n_steps))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {"actions": self.actions, "updates": self.updates}
        path = self.directory / f"rank_{trainer.global_rank}.json"
        path.write_text(json.dumps(record))
