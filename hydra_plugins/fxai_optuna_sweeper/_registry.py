"""How a job launched by the ``fxai_optuna`` sweeper reaches its Optuna trial.

The sweeper launches each trial as a Hydra job whose ``hydra.job.num`` is the trial's number
(unique in the study, so jobs of several sweep processes sharing one study never share a job
directory). The job's own config holds the rest: ``hydra.sweeper.storage`` and
``hydra.sweeper.study_name`` (the sweeper passes the name to its jobs when Optuna chose it).
`current_trial_context` re-attaches the job to its trial from these three, in whatever
process the launcher runs it (basic, joblib, submitit, Ray), so reports, pruning and user
attributes reach the storage. Only a study kept in memory (``storage: null``) cannot be
reached from another process: the sweeper publishes it here for jobs in its own process,
and refuses launchers that run jobs elsewhere.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig

__all__ = [
    "SWEEPER_TARGETS",
    "TrialContext",
    "attach_trial",
    "current_trial",
    "current_trial_context",
    "publish_in_memory_study",
    "withdraw_in_memory_study",
]

SWEEPER_TARGETS = (
    "hydra_plugins.fxai_optuna_sweeper.fxai_optuna_sweeper.FxaiOptunaSweeper",
    # the stand-in that configs pinned to hydra-optuna-sweeper's class get
    "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
)
"""``hydra.sweeper._target_`` of a sweep by this plugin."""

_LOCK = threading.Lock()
_IN_MEMORY: dict[str, optuna.Study] = {}
_ATTACHED: dict[tuple[str | None, str, int], TrialContext] = {}


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
    artifact_dir: str | None = None
    """Directory of the trials' artifacts (``hydra.sweeper.artifact_dir``, by default
    ``<hydra.sweep.dir>/artifacts``): the job uploads its equity curve, metrics and checkpoint
    there, as ``fxai-tune run`` does into the study's ``artifact_dir``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form values for the task (unused by the sweeper)."""


def publish_in_memory_study(study: optuna.Study) -> None:
    """Make an in-memory study reachable by the jobs the sweeper runs in its own process."""
    with _LOCK:
        _IN_MEMORY[study.study_name] = study


def withdraw_in_memory_study(study: optuna.Study) -> None:
    """Forget an in-memory study once its sweep has ended."""
    with _LOCK:
        _IN_MEMORY.pop(study.study_name, None)


def _is_ours(sweeper: Any) -> bool:
    # hydra-optuna-sweeper, when installed, owns the stand-in's class name: its config lacks
    # the heartbeat keys
    return (
        sweeper is not None
        and sweeper.get("_target_") in SWEEPER_TARGETS
        and "heartbeat_interval" in sweeper
    )


@functools.cache
def _storage(url: str) -> optuna.storages.BaseStorage:
    from fxai_tune.tune import make_storage

    return make_storage(url)  # the sweeper process beats for the trial


def attach_trial(hydra_config: DictConfig) -> TrialContext | None:
    """The `TrialContext` of the job whose Hydra config is ``hydra_config``, or None.

    Raises:
        LookupError: The job's trial is not in its study (the job was started by hand with
            a copied config, or its in-memory study lives in another process).
    """
    import optuna
    from hydra.types import RunMode
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    sweeper = OmegaConf.select(hydra_config, "sweeper", default=None)
    num = OmegaConf.select(hydra_config, "job.num", default=None, throw_on_missing=False)
    multirun = str(hydra_config.get("mode")) == str(RunMode.MULTIRUN)
    if not (multirun and _is_ours(sweeper)) or num is None or sweeper.get("study_name") is None:
        return None
    url, name = sweeper.get("storage"), str(sweeper.study_name)
    key = (url, name, int(num))
    with _LOCK:
        if key in _ATTACHED:
            return _ATTACHED[key]
        study = _IN_MEMORY.get(name) if url is None else None
    if study is None:
        if url is None:
            raise LookupError(
                f"job {num}: its study {name!r} is kept in memory by a sweep in another "
                "process; valid: hydra.sweeper.storage=sqlite:///FILE.db (or another URL)"
            )
        pruner = sweeper.get("pruner")
        study = optuna.load_study(
            study_name=name,
            storage=_storage(str(url)),
            pruner=instantiate(pruner) if isinstance(pruner, DictConfig) else None,
            sampler=_job_sampler(sweeper),
        )
    try:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, int(num)
        )
    except KeyError:
        raise LookupError(f"job {num}: study {name!r} has no trial {num}") from None
    search_space = sweeper.get("search_space")
    if isinstance(search_space, str):
        from fxai_tune.tune import load_search_space

        search_space = load_search_space(search_space)
    else:
        search_space = None
    from pathlib import Path

    artifact_dir = sweeper.get("artifact_dir") or Path(str(hydra_config.sweep.dir)) / "artifacts"
    context = TrialContext(
        trial=optuna.Trial(study, trial_id),
        directions=tuple(d.name.lower() for d in study.directions),
        search_space=search_space,
        artifact_dir=str(Path(artifact_dir).expanduser().resolve()),
    )
    with _LOCK:
        _ATTACHED[key] = context
    return context


def _job_sampler(sweeper: DictConfig) -> optuna.samplers.BaseSampler | None:
    """The sweep's sampler, for a ``search_space: NAME`` sampled inside the job."""
    if not isinstance(sweeper.get("search_space"), str):
        return None  # nothing is sampled in the job: Optuna's default stands in
    from hydra_plugins.fxai_optuna_sweeper._impl import build_sampler

    return build_sampler(sweeper.get("sampler"))


def current_trial_context() -> TrialContext | None:
    """The `TrialContext` of the running Hydra job, or None outside an ``fxai_optuna`` sweep."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return attach_trial(HydraConfig.get())


def current_trial() -> optuna.Trial | None:
    """The Optuna trial of the running Hydra job, or None outside an ``fxai_optuna`` sweep.

    Example:
        >>> current_trial() is None  # not inside a sweep
        True
    """
    context = current_trial_context()
    return context.trial if context is not None else None
