"""Hand-off of the running Optuna trial from the sweeper to the job it launched.

The sweeper launches each trial as a Hydra job whose ``hydra.job.num`` is the trial's number
(unique in the study, so jobs of several sweep processes sharing one study never share a job
directory). Before launching, it publishes the trial here under that number; the job looks
itself up with `current_trial` (by ``HydraConfig.get().job.num``) to report intermediate values
and be pruned. Only launchers that run jobs in the sweeper's own process (Hydra's default
``basic`` launcher) can see the registry; elsewhere `current_trial` returns None.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["TrialContext", "current_trial", "current_trial_context", "publish", "withdraw"]

_LOCK = threading.Lock()
_ACTIVE: dict[int, TrialContext] = {}


@dataclass(frozen=True)
class TrialContext:
    """What a job launched by the ``fxai_optuna`` sweeper gets besides its overrides."""

    trial: optuna.Trial
    """The job's live trial: report to it, ask `should_prune`, sample more parameters."""
    directions: tuple[str, ...]
    """The study's directions (``maximize``/``minimize``), one per returned value."""
    search_space: Any = None
    """A `fxai_tune.tune.SearchSpace` that the job samples into its config (the sweeper's
    ``search_space: NAME``), or None."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form values for the task (unused by the sweeper)."""


def publish(job_num: int, context: TrialContext) -> None:
    """Make ``context`` visible to the job whose ``hydra.job.num`` is ``job_num``."""
    with _LOCK:
        _ACTIVE[job_num] = context


def withdraw(job_num: int) -> None:
    """Forget the job's trial once the job has returned."""
    with _LOCK:
        _ACTIVE.pop(job_num, None)


def current_trial_context() -> TrialContext | None:
    """The `TrialContext` of the running Hydra job, or None outside an ``fxai_optuna`` sweep."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    num = OmegaConf.select(HydraConfig.get(), "job.num", default=None, throw_on_missing=False)
    if num is None:
        return None
    with _LOCK:
        return _ACTIVE.get(int(num))


def current_trial() -> optuna.Trial | None:
    """The Optuna trial of the running Hydra job, or None outside an ``fxai_optuna`` sweep.

    Example:
        >>> current_trial() is None  # not inside a sweep
        True
    """
    context = current_trial_context()
    return context.trial if context is not None else None
