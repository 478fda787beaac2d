"""Tuning trials trained on several devices: which strategies work, and the relay they need.

A trial belongs to one process: the worker (or sweep job) that asked for it, holds the
storage connection and beats its heartbeat. Lightning's ``ddp`` (and ``fsdp``, ``deepspeed``)
re-runs the command line once per extra rank, so a second copy of ``fxai-tune worker``
starts: it sees the cap reached and exits, or opens a trial of its own, while rank 0 waits
for it forever. ``ddp_spawn`` starts the ranks from the trial's process and runs only
``Trainer.fit`` in them, so the trial stays where it is: `check_trial_strategy` admits it and
refuses the strategies that re-run the command (docs/tuning.md, "Trials on several
devices").

A spawned rank cannot hold the trial itself (an `optuna.Trial` does not pickle: its study
holds the sampler and the storage). `TrialRelay` serves rank 0's calls from a thread of the
trial's process: the pruning report and the validations the score is taken from.
"""

from __future__ import annotations

import builtins
import dataclasses
import multiprocessing
import os
import threading
from typing import Any

from pytorch_lightning.strategies import StrategyRegistry

from fxai_tune.rl import TrainerConfig

__all__ = [
    "SINGLE_PROCESS_STRATEGIES",
    "TrialRelay",
    "check_trial_strategy",
    "rank_error",
    "spawns_ranks",
    "trial_trainer",
]

SINGLE_PROCESS_STRATEGIES = ("auto", "single_device")
"""Strategies that train a trial in its own process (on one device: `trial_trainer`)."""


def spawns_ranks(strategy: str) -> bool:
    """Whether Lightning's ``strategy`` starts its ranks from this process by ``spawn``
    (``ddp_spawn`` and its ``find_unused_parameters`` variants)."""
    if strategy not in StrategyRegistry:
        return False
    # (a dict of the registration; StrategyRegistry.get would build the strategy)
    return StrategyRegistry[strategy]["init_params"].get("start_method") == "spawn"


def check_trial_strategy(strategy: str) -> None:
    """Refuse a ``trainer.strategy`` that cannot train a tuning trial.

    Raises:
        ValueError: One line naming the strategy, why, and the valid ones.
    """
    if strategy in SINGLE_PROCESS_STRATEGIES or spawns_ranks(strategy):
        return
    why = (
        "re-runs the tuning command once per extra rank, and that copy cannot join the "
        "trial (it would start or skip one while rank 0 waits for it)"
        if strategy in StrategyRegistry
        else "is not a Lightning strategy a trial can use"
    )
    raise ValueError(
        f"trainer.strategy={strategy!r} {why}; valid in a tuning trial: "
        f"{' or '.join(SINGLE_PROCESS_STRATEGIES)} (one device), or ddp_spawn (ranks spawned "
        "by the trial's process; also ddp_spawn_find_unused_parameters_true/false)"
    )


def trial_trainer(trainer: TrainerConfig) -> TrainerConfig:
    """``trainer`` as a trial runs it: checked, and on one device unless it spawns ranks.

    With ``strategy: auto`` and several devices Lightning would pick ``ddp``; a trial that
    does not spawn its ranks trains on one device (the worker's).
    """
    check_trial_strategy(trainer.strategy)
    if spawns_ranks(trainer.strategy) or trainer.devices == "1":
        return trainer
    return dataclasses.replace(trainer, devices="1")


def rank_error(error: BaseException) -> BaseException:
    """The exception a spawned rank raised, rebuilt from ``error`` (torch's
    ``ProcessRaisedException`` carries only the rank's traceback text): a built-in type
    again (a ``FloatingPointError`` stays one, so the trial's ``fail_reason`` reads as on
    one device), any other as a RuntimeError naming it; anything else unchanged."""
    from torch.multiprocessing import ProcessRaisedException

    if not isinstance(error, ProcessRaisedException):
        return error
    lines = [line for line in str(error).splitlines() if line.strip()]
    name, _, message = (lines[-1] if lines else "").partition(": ")
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(message)
    return RuntimeError(f"{name}: {message}" if message else name or "a spawned rank failed")


class TrialRelay:
    """Calls, from spawned ranks, methods of objects that stay in the trial's process.

    Use as a context manager around ``Trainer.fit``: a thread of this process answers the
    calls that `call` sends through a queue, one at a time, and the caller waits for the
    result (or the exception, re-raised on its side). Called in this process, `call` calls
    the object directly. The relay pickles (into the ranks) without its objects.

    Args:
        targets: Name -> object whose methods the ranks may call.
    """

    def __init__(self, targets: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self._targets = targets
        self._owner = os.getpid()
        self._requests: Any = context.Queue()
        self._replies: Any = context.Queue()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_owner": self._owner, "_requests": self._requests, "_replies": self._replies,
                "_targets": {}, "_thread": None}

    def __enter__(self) -> TrialRelay:
        self._thread = threading.Thread(target=self._serve, name="trial-relay", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._requests.put(None)
        if self._thread is not None:
            self._thread.join()
        self._requests.close()
        self._replies.close()

    def call(self, target: str, method: str, *args: Any) -> Any:
        """``targets[target].method(*args)`` in the trial's process; its result."""
        if os.getpid() == self._owner:
            return getattr(self._targets[target], method)(*args)
        self._requests.put((target, method, args))
        ok, result = self._replies.get()
        if not ok:
            raise result
        return result

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            target, method, args = request
            try:
                reply = (True, getattr(self._targets[target], method)(*args))
            except BaseException as error:  # noqa: BLE001 - re-raised in the calling rank
                reply = (False, _picklable(error))
            self._replies.put(reply)


def _picklable(error: BaseException) -> BaseException:
    """``error`` itself when it pickles, else a RuntimeError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error

