"""Optuna tuning: search spaces, studies, the objective, pruning, workers and inspection."""

from __future__ import annotations

from fxai_tune.tune._inspect import (
    best_trials,
    export_best_config,
    save_dashboard_note,
    study_status,
)
from fxai_tune.tune._statistics import search_statistics, statistics_lines
from fxai_tune.tune._launch import (
    EXIT_FAILURE_RATE,
    launch_workers,
    new_log_dir,
    plan_devices,
    python_command,
    watch,
)
from fxai_tune.tune._objective import (
    TrialObjective,
    artifact_upload,
    check_finite_objective,
    describe_failure,
    recording_outcome,
)
from fxai_tune.tune._preflight import (
    PreflightError,
    check_config_builds,
    check_existing_study,
    preflight,
)
from fxai_tune.tune._pruning import OptunaPruningCallback, ValidationHistory
from fxai_tune.tune._ranks import check_trial_strategy, spawns_ranks
from fxai_tune.tune._scoring import (
    ObjectiveSpec,
    check_unshaped_objective,
    decode_returns,
    encode_returns,
    score_trial,
    select_validation,
)
from fxai_tune.tune._copy import copy_studies
from fxai_tune.tune._runner import (
    FailureRateExceeded,
    StudyCounts,
    count_trials,
    create_or_load_study,
    fail_stale_trials,
    open_study,
    requeue_interrupted,
    run_worker,
    study_lock,
)
from fxai_tune.tune._seeding import TrialSeededSampler, trial_seed
from fxai_tune.tune._space import SearchSpace, SpaceError, load_search_space
from fxai_tune.tune._storage import (
    DatabaseOutage,
    StorageError,
    StudyLockError,
    StudyLockTimeout,
    check_storage_for_workers,
    check_storage_reachable,
    find_study,
    make_storage,
    mask_password,
    normalize_storage_url,
)
from fxai_tune.tune._study import (
    StudyConfig,
    StudyError,
    check_study_name,
    load_study_config,
    make_pruner,
    make_sampler,
)

__all__ = [
    "EXIT_FAILURE_RATE",
    "DatabaseOutage",
    "FailureRateExceeded",
    "ObjectiveSpec",
    "OptunaPruningCallback",
    "PreflightError",
    "SearchSpace",
    "SpaceError",
    "StorageError",
    "StudyConfig",
    "StudyCounts",
    "StudyError",
    "StudyLockError",
    "StudyLockTimeout",
    "TrialObjective",
    "TrialSeededSampler",
    "ValidationHistory",
    "best_trials",
    "check_config_builds",
    "check_existing_study",
    "check_storage_for_workers",
    "check_storage_reachable",
    "check_study_name",
    "check_trial_strategy",
    "check_unshaped_objective",
    "copy_studies",
    "count_trials",
    "create_or_load_study",
    "decode_returns",
    "describe_failure",
    "artifact_upload",
    "check_finite_objective",
    "recording_outcome",
    "encode_returns",
    "export_best_config",
    "fail_stale_trials",
    "find_study",
    "launch_workers",
    "new_log_dir",
    "load_search_space",
    "load_study_config",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "mask_password",
    "normalize_storage_url",
    "open_study",
    "plan_devices",
    "python_command",
    "requeue_interrupted",
    "preflight",
    "score_trial",
    "select_validation",
    "spawns_ranks",
    "run_worker",
    "study_lock",
    "save_dashboard_note",
    "search_statistics",
    "statistics_lines",
    "study_status",
    "trial_seed",
    "watch",
]
