"""Running a study: workers on one shared storage, an exact trial cap, failure limits.

Several workers (processes here, or on other machines with a PostgreSQL/MySQL storage) call
`run_worker` on the same study. Each trial is started under a short study-wide lock that
checks the cap first, so the study ends with exactly ``n_trials`` trials however many workers
race for the last one; the lock is released as soon as the trial exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from fxai_tune.tune._grpc import grpc_study_lock
from fxai_tune.tune._objective import TrialObjective
from fxai_tune.tune._provenance import PROVENANCE_ATTR, provenance
from fxai_tune.tune._redis import redis_study_lock
from fxai_tune.tune._storage import (
    STUDY_LOCK_TIMEOUT,
    DatabaseOutage,
    advisory_lock,
    journal_path,
    make_storage,
    storage_backend,
)
from fxai_tune.tune._study import StudyConfig

__all__ = [
    "FailureRateExceeded",
    "StudyCounts",
    "count_trials",
    "create_or_load_study",
    "fail_stale_trials",
    "open_study",
    "requeue_interrupted",
    "run_worker",
    "study_lock",
]

log = logging.getLogger(__name__)

# The failure-rate limit applies once this many trials have finished.
MIN_FINISHED_FOR_FAILURE_RATE = 3


class FailureRateExceeded(RuntimeError):
    """Too many trials failed; the study was stopped."""


def open_study(
    config: StudyConfig, storage_url: str | None = None
) -> optuna.Study:
    """Create the study, or load it if it exists (rerunning a command continues it).

    Through `create_or_load_study` (under the study lock). A seeded sampler draws trial N from
    ``(seed, N)``, so workers and later runs never propose a trial's parameters again.
    A created study records its metric names and its `provenance` (packages, git commit,
    data file hashes); a stored one must keep the file's directions and metrics.

    Raises:
        StudyError: The stored study optimises other directions or metrics than the file.
    """
    from fxai_tune.tune._study import check_stored_objectives, make_pruner, make_sampler

    def record_provenance(study: optuna.Study) -> None:
        project = config.path.parent if config.path is not None else Path.cwd()
        study.set_user_attr(PROVENANCE_ATTR, provenance(config.base_config, project_dir=project))

    return create_or_load_study(
        storage_url or config.storage,
        config.name,
        directions=list(config.directions),
        metrics=list(config.metrics),
        sampler=make_sampler(
            config.sampler,
            n_objectives=len(config.directions),
            distributions=config.space.distributions(),
        ),
        pruner=make_pruner(config.pruner),
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
        max_retry=config.max_retry,
        outage_window=config.outage_window,
        on_load=lambda study: check_stored_objectives(study, config),
        on_create=record_provenance,
    )


def create_or_load_study(  # noqa: PLR0913 - the study's settings, keyword-only
    url: str,
    name: str | None,
    *,
    directions: list[str],
    metrics: list[str] | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    outage_window: float | None = None,
    on_load: Callable[[optuna.Study], None] | None = None,
    on_create: Callable[[optuna.Study], None] | None = None,
) -> optuna.Study:
    """Open the study ``name`` at ``url`` under the study lock, creating it when needed.

    `fxai-tune run`, `fxai-tune worker` and the Hydra sweeper all open studies here: under the
    lock, processes started together on a fresh database do not race to create Optuna's
    tables and the study (two sweeps on a fresh PostgreSQL crashed with ``UniqueViolation``).
    ``metrics`` are set as the study's metric names when it has none. ``name`` None lets
    Optuna name a new study. The heartbeat settings are `make_storage`'s. ``on_load`` checks
    a stored study, ``on_create`` completes a new one (both still under the lock).
    """
    with study_lock(url, name or "", outage_window=outage_window):
        storage = make_storage(
            url,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
            outage_window=outage_window,
        )
        try:
            existed = name is not None and storage.get_study_id_from_name(name) is not None
        except KeyError:
            existed = False
        if existed:  # load_study: no "Using an existing study" log line on every start
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
            if on_load is not None:
                on_load(study)
        else:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                directions=directions,
            )
            if on_create is not None:
                on_create(study)
        if metrics and study.metric_names is None:  # plots say val/sharpe, not "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(metrics))
        return study


@dataclass
class StudyCounts:
    """Trials of a study by state; ``counted`` is what the trial cap compares with."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retried: int = 0

    @property
    def counted(self) -> int:
        """Trials toward the cap: a failed trial replaced by its retry counts once."""
        return self.complete + self.pruned + self.failed + self.running + self.waiting - self.retried

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed - self.retried


def count_trials(trials: list[FrozenTrial]) -> StudyCounts:
    """Count ``trials`` by state, discounting failed trials that a retry replaced."""
    counts = StudyCounts()
    replaced = set()
    for trial in trials:
        history = trial.system_attrs.get("retry_history")
        if history:
            replaced.add(history[-1])
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            counts.complete += 1
        elif trial.state == TrialState.PRUNED:
            counts.pruned += 1
        elif trial.state == TrialState.FAIL:
            counts.failed += 1
            counts.retried += trial.number in replaced
        elif trial.state == TrialState.RUNNING:
            counts.running += 1
        elif trial.state == TrialState.WAITING:
            counts.waiting += 1
    return counts


@contextlib.contextmanager
def study_lock(
    storage_url: str,
    study_name: str,
    *,
    outage_window: float | None = None,
    lock_timeout: float = STUDY_LOCK_TIMEOUT,
) -> Iterator[Callable[[], None]]:
    """A study-wide mutual-exclusion lock; yields a function that releases it early.

    PostgreSQL and MySQL storages use a database advisory lock, so workers on different
    machines exclude each other; Redis storages a lease in that Redis (`redis_study_lock`),
    gRPC storages a lock held through the proxy (`grpc_study_lock`);
    file storages (SQLite, journal) lock a file beside them.
    With ``outage_window``, taking the lock rides out an outage of its server that long; a lock
    lost with its connection needs no release (the server drops it with the session).
    A database lock not obtained within ``lock_timeout`` seconds raises `StudyLockTimeout`
    (`advisory_lock`).
    """
    backend = storage_backend(storage_url)
    if backend == "redis":  # a lease in the same Redis (docs/scaling.md)
        with redis_study_lock(storage_url, study_name, outage_window=outage_window) as release:
            yield release
        return
    if backend == "grpc":  # held through the proxy's coordination service (docs/scaling.md)
        with grpc_study_lock(storage_url, study_name, outage_window=outage_window) as release:
            yield release
        return
    if backend in ("postgresql", "mysql"):  # a session-level lock in the database
        with advisory_lock(
            storage_url, study_name, timeout=lock_timeout, outage_window=outage_window
        ) as release:
            yield release
        return
    lock_path = _lock_file(storage_url, study_name)
    released = False
    handle = open(lock_path, "a+")  # noqa: SIM115 - closed by release()
    fcntl.flock(handle, fcntl.LOCK_EX)

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    try:
        yield release
    finally:
        release()


def _lock_file(storage_url: str, study_name: str) -> Path:
    journal = journal_path(storage_url)
    if journal is not None:
        base = Path(journal)
    elif storage_url.startswith("sqlite:///"):
        base = Path(storage_url.removeprefix("sqlite:///"))
    else:  # e.g. in-memory SQLite: a lock in the working directory
        base = Path.cwd() / "fxai-tune"
    safe = "".join(c if c.isalnum() else "_" for c in study_name)
    path = base.parent / f".{base.name}.{safe}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _check_failure_rate(
    study: optuna.Study, trials: list[FrozenTrial], max_failure_rate: float
) -> None:
    """Stop the study when too many of its finished trials failed."""
    counts = count_trials(trials)
    if counts.finished < MIN_FINISHED_FOR_FAILURE_RATE:
        return
    failed = counts.failed - counts.retried
    rate = failed / counts.finished
    if rate > max_failure_rate:
        reasons = [t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL]
        last = next((r for r in reversed(reasons) if r), "no reason recorded")
        raise FailureRateExceeded(
            f"study {study.study_name!r} stopped: {failed} of {counts.finished} finished "
            f"trials failed ({rate:.0%} > max_failure_rate {max_failure_rate:.0%}); "
            f"last failure: {last}"
        )


def _fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


INTERRUPTED_ATTR = "interrupted"
"""User attr of a trial stopped by Ctrl-C; its parameters were queued again."""


def requeue_interrupted(study: optuna.Study, number: int) -> int | None:
    """Queue trial ``number``, stopped by Ctrl-C, again with its parameters.

    The interrupted trial stays FAIL (``fail_reason`` says why) and the queued one replaces it
    the way a heartbeat retry does (``retry_history``), so the cap counts the pair once and the
    next run re-runs the parameters (issue 11). Returns the queued trial's number, or None when
    the trial had finished anyway.
    """
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    trial = trials.get(number)
    if trial is None or trial.state not in (TrialState.FAIL, TrialState.RUNNING):
        return None
    if trial.state == TrialState.RUNNING:  # Ctrl-C before Optuna recorded it
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        study.tell(trial.number, state=TrialState.FAIL)
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    system_attrs = {
        "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
        "retry_history": history,
    }
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={"requeued_from": trial.number},
            system_attrs=system_attrs,
        )
    )
    return max(t.number for t in study.get_trials(deepcopy=False))


class _NoInterruptTraceback(logging.Filter):
    """Log a trial stopped by Ctrl-C in one line: Optuna attaches the interrupt's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_interrupts() -> None:
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _NoInterruptTraceback) for f in handler.filters):
            handler.addFilter(_NoInterruptTraceback())


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials whose worker stopped beating (and queue their retries).

    Returns the numbers of the trials failed. A no-op for storages without heartbeat.
    """
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    _fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(before - after)


def run_worker(
    config: StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage_url: str | None = None,
    accelerator: str = "auto",
    torch_threads: int | None = None,
    worker_index: int = 0,
) -> StudyCounts:
    """Run trials of ``config``'s study until the cap, the timeout, or too many failures.

    Args:
        config: The validated study definition.
        n_trials: Trial cap of the whole study (all workers); default ``config.n_trials``;
            None with neither: no cap, the worker runs until ``timeout``.
        timeout: Seconds after which this worker starts no new trial.
        storage_url: Storage URL overriding ``config.storage``.
        accelerator: Lightning accelerator for this worker's trials.
        torch_threads: torch threads for this worker (1 per worker on CPU).
        worker_index: This worker's index among those started together (its log's number);
            the sampler's draws do not depend on it (trial N draws from ``(seed, N)``).

    Returns:
        The study's trial counts when this worker stopped.

    Raises:
        FailureRateExceeded: When the share of failed trials passed ``max_failure_rate``.
    """
    url = storage_url or config.storage
    cap = n_trials if n_trials is not None else config.n_trials
    timeout = timeout if timeout is not None else config.timeout
    study = open_study(config, url)
    objective = TrialObjective(config, accelerator=accelerator, torch_threads=torch_threads)
    deadline = time.monotonic() + timeout if timeout is not None else None
    worker = f"{os.uname().nodename}:{os.getpid()}"
    current: dict[str, int] = {}
    _quiet_interrupts()
    try:
        _run_trials(study, config, objective, url, cap, deadline, worker, current)
    except KeyboardInterrupt:
        if "number" in current:
            requeue_interrupted(study, current["number"])
        raise
    return count_trials(study.get_trials(deepcopy=False))


def _outage_in(error: BaseException) -> DatabaseOutage | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, DatabaseOutage):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _run_trials(  # noqa: PLR0913 - the worker loop's state
    study: optuna.Study,
    config: StudyConfig,
    objective: TrialObjective,
    url: str,
    cap: int | None,
    deadline: float | None,
    worker: str,
    current: dict[str, int],
) -> None:
    while deadline is None or time.monotonic() < deadline:
        with study_lock(url, config.name, outage_window=config.outage_window) as release:
            # a trial whose worker died (no heartbeat for grace_period) is failed here and its
            # retry queued, before the cap is checked
            _fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            _check_failure_rate(study, trials, config.max_failure_rate)
            counts = count_trials(trials)
            if counts.waiting == 0 and cap is not None and counts.counted >= cap:
                break

            def gated(trial: optuna.Trial) -> float | list[float]:
                release()  # the trial exists now: let other workers start theirs
                current["number"] = trial.number
                trial.set_user_attr("worker", worker)
                return objective(trial)

            try:
                study.optimize(gated, n_trials=1, catch=(Exception,))
            except Exception as error:
                # Optuna's post-trial clean-up turns a failed tell into an UnboundLocalError
                outage = _outage_in(error)
                if outage is not None:
                    raise outage from None
                raise
            current.pop("number", None)
