"""Reading a study back: status summary, per-worker activity, best config export."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from fxai_tune.rl import TrainConfig, build_train_config, save_train_config
from fxai_tune.tune._provenance import PROVENANCE_ATTR
from fxai_tune.tune._runner import count_trials
from fxai_tune.tune._statistics import search_statistics, statistics_lines

__all__ = [
    "best_trials",
    "export_best_config",
    "heartbeat_ages",
    "save_dashboard_note",
    "study_status",
]


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front (several); [] when none completed."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    return sorted(study.best_trials, key=lambda t: t.number)


def heartbeat_ages(study: optuna.Study) -> dict[int, float]:
    """Seconds since the last heartbeat of each running trial that has one (RDB storages).

    Measured on the database's clock, as Optuna's own staleness test is; {} for storages
    without heartbeats (journal files).
    """
    storage = study._storage
    storage = getattr(storage, "_backend", storage)  # Optuna's _CachedStorage wraps it
    if not isinstance(storage, optuna.storages.RDBStorage):
        return {}
    import sqlalchemy
    from optuna.storages._rdb import models

    running = {
        t._trial_id: t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    }
    if not running:
        return {}
    session = storage.scoped_session()
    try:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        rows = (
            session.query(models.TrialHeartbeatModel)
            .filter(models.TrialHeartbeatModel.trial_id.in_(list(running)))
            .all()
        )
        return {
            running[row.trial_id]: (now - row.heartbeat.replace(tzinfo=None)).total_seconds()
            for row in rows
        }
    finally:
        session.close()


def study_status(study: optuna.Study, *, grace_period: float | None = None) -> dict[str, Any]:
    """Trials by state, best value and params, and what each worker did (JSON-ready).

    ``stale`` lists the running trials whose heartbeat is older than ``grace_period``
    seconds (their worker is gone) with that age; the next `run` or `worker` fails them and
    re-runs their parameters.
    """
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    workers: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"trials": 0, "complete": 0, "pruned": 0, "failed": 0, "running": []}
    )
    for trial in trials:
        worker = trial.user_attrs.get("worker")
        if worker is None:
            continue
        entry = workers[worker]
        entry["trials"] += 1
        if trial.state == TrialState.COMPLETE:
            entry["complete"] += 1
        elif trial.state == TrialState.PRUNED:
            entry["pruned"] += 1
        elif trial.state == TrialState.FAIL:
            entry["failed"] += 1
        elif trial.state == TrialState.RUNNING:
            entry["running"].append(trial.number)
        if trial.datetime_complete is not None:
            last = entry.get("last_finished")
            finished = trial.datetime_complete.isoformat(timespec="seconds")
            entry["last_finished"] = max(last, finished) if last else finished
    best = [
        {"number": t.number, "values": t.values, "params": t.params} for t in best_trials(study)
    ]
    failures = [
        {"number": t.number, "reason": t.user_attrs.get("fail_reason", "stale heartbeat")}
        for t in trials
        if t.state == TrialState.FAIL
    ]
    ages = heartbeat_ages(study)
    stale = [
        {"number": number, "heartbeat_age_s": round(age, 1)}
        for number, age in sorted(ages.items())
        if grace_period is not None and age > grace_period
    ]
    return {
        "study": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "trials": {
            "total": len(trials),
            "complete": counts.complete,
            "pruned": counts.pruned,
            "failed": counts.failed,
            "running": counts.running,
            "waiting": counts.waiting,
            "retried": counts.retried,
        },
        "best": best,
        "overfitting": search_statistics(study),
        "failures": failures,
        "stale": stale,
        "workers": dict(workers),
        "provenance": study.user_attrs.get(PROVENANCE_ATTR),
    }


def export_best_config(
    study: optuna.Study,
    path: str | Path,
    *,
    trial: int | None = None,
    run_dir: str | None = None,
) -> tuple[FrozenTrial, TrainConfig]:
    """Write the best trial's (or trial ``trial``'s) complete training config to ``path``.

    Without ``trial``, a single-objective study's best trial; a multi-objective study's first
    Pareto trial (by number), which the caller should name (`best_trials` lists the front).

    The config is the one the trial trained (base config + sampled params, as recorded in
    its ``config`` user attr, its devices and threads included so that the same seed
    reproduces the recorded value), with a fresh run directory, a progress bar, and
    ``provenance``: study, trial, recorded values, seed spread, fold scores and the search's
    overfitting statistics, which the final test report shows.

    Args:
        study: The study.
        path: The config YAML to write.
        trial: Number of the completed trial to export; default the best (see above).
        run_dir: Run directory of the exported config; default ``runs/STUDY-trialN``.

    Raises:
        ValueError: When the study has no completed trial, or ``trial`` is not one.
    """
    best = best_trials(study)
    if not best:
        raise ValueError(f"study {study.study_name!r} has no completed trial to export")
    if trial is None:
        chosen = best[0]
    else:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        chosen = next((t for t in complete if t.number == trial), None)
        if chosen is None:
            raise ValueError(
                f"--trial {trial}: not a completed trial of study {study.study_name!r}; "
                f"valid: {sorted(t.number for t in complete)}"
            )
    trial = chosen
    recorded = trial.user_attrs.get("config")
    if recorded is None:
        raise ValueError(f"trial {trial.number} recorded no config (not an fxai-tune trial?)")
    config = build_train_config(recorded)
    # the trial's own threads and devices: a retrain with the same seed reproduces its value
    trainer = dataclasses.replace(config.trainer, enable_progress_bar=True)
    provenance = {
        "study": study.study_name,
        "trial": trial.number,
        "values": list(trial.values),
        "metrics": study.metric_names,
        "seed_spread": trial.user_attrs.get("seed_spread"),
        "fold_scores": trial.user_attrs.get("fold_scores"),
        "search": search_statistics(study),
    }
    config = dataclasses.replace(
        config,
        trainer=trainer,
        run_dir=run_dir or f"runs/{study.study_name}-trial{trial.number}",
        provenance=provenance,
    )
    save_train_config(config, path)
    return trial, config


def save_dashboard_note(study: optuna.Study, stats: dict[str, Any]) -> None:
    """Show the search's overfitting statistics as the study's note in optuna-dashboard."""
    from optuna_dashboard import save_note

    body = "\n\n".join(["## Overfitting statistics", *statistics_lines(stats)])
    save_note(study, body)
