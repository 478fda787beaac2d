"""Pre-flight: what would fail every trial of a study, checked once before the first one.

`load_study_config` checks the files (keys, types, ranges, the search space's bounds). What
only shows when a run is built is checked here (issue 11): the market data is loaded and
validated, the training and validation envs are built and reset once, the policy is built and
runs one forward pass on the first observation, and the objective's metrics are compared with
what a validation logs. Against a study that already exists in the storage, the file may not
change the directions, the metrics or (without ``allow_space_change``) the distribution of a
parameter the study's trials already sampled: TPE would model incompatible histories as one.

Every refusal is a `PreflightError`, one line naming the file and key (or the data file's line
and column, from `fxai_tune.data.DataError`) and what is valid.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import optuna
import torch

from fxai_tune.data import DataError
from fxai_tune.rl import (
    ConfigError,
    EpisodeResult,
    PPOLightningModule,
    RLDataModule,
    TrainConfig,
    make_vector_env,
    summarize_episodes,
)
from fxai_tune.rl._buffer import first_non_finite
from fxai_tune.tune._ranks import check_trial_strategy
from fxai_tune.tune._scoring import ObjectiveSpec, fold_config
from fxai_tune.tune._study import StudyConfig, StudyError, check_stored_objectives

__all__ = [
    "PreflightError",
    "check_artifact_dir",
    "check_config_builds",
    "check_existing_study",
    "check_training_builds",
    "logged_metrics",
    "preflight",
]

log = logging.getLogger(__name__)


class PreflightError(ValueError):
    """A study that would fail at trial time; the message is one line naming file and key."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_artifact_dir(path: Path, *, where: str) -> None:
    """Refuse an ``artifact_dir`` that cannot be created or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise PreflightError(
            f"{where}: artifact_dir {str(path)!r} is not writable ({error.strerror or error}); "
            "valid: a directory this user can create and write"
        ) from None


def logged_metrics(config: TrainConfig, *, periods_per_year: float | None) -> list[str]:
    """The ``val/...`` metrics a validation of ``config`` logs.

    Found by summarising a two-step stand-in episode with the validation's own
    `summarize_episodes`, so the list cannot drift from what training logs.
    """
    if config.env_id is not None:  # RecordEpisodeStatistics: r, l, t
        stats = {"reward": 0.0, "length": 0.0, "t": 0.0}
        episode = EpisodeResult(stats=stats)
        ppy = None
    else:
        stats = {"reward": 0.0, "wins": 0.0, "losses": 0.0}
        episode = EpisodeResult(
            stats=stats, equity=np.ones(3), log_returns=np.zeros(2), positions=np.zeros(2)
        )
        ppy = periods_per_year
    metrics = summarize_episodes(
        [episode], score=config.trainer.val_score, periods_per_year=ppy
    ).metrics
    return sorted(f"val/{name}" for name in metrics)


def check_training_builds(config: StudyConfig) -> None:
    """Build what every trial of the study builds, once (`check_config_builds`).

    Raises:
        PreflightError: One line naming the study file and what is wrong.
    """
    where = str(config.path) if config.path is not None else config.name
    check_config_builds(config.base_config, config.objective, where=where, key_prefix="base.")


def check_config_builds(
    base: TrainConfig, objective: ObjectiveSpec, *, where: str, key_prefix: str = ""
) -> None:
    """Build what every trial of ``base`` builds, once: data, envs (one reset), policy (one
    forward), and check the trial strategy and that a validation logs the objective's metrics.

    Shared by ``fxai-tune run`` (a study file's base config) and the Hydra sweeper (the config
    of a sweep's jobs before sampling). Each walk-forward fold is built (its data windows
    differ). The trial's own accelerator is the worker's; the pre-flight runs on the CPU.

    Args:
        base: The training config before a trial's parameters are applied.
        objective: What a trial's value is.
        where: What to name in errors (the study file, or the Hydra config).
        key_prefix: Where ``base``'s keys are in that file (a study file's ``base.``).

    Raises:
        PreflightError: One line naming ``where`` and what is wrong.
    """
    try:
        check_trial_strategy(base.trainer.strategy)
    except ValueError as error:
        raise PreflightError(f"{where}: {key_prefix}{error}") from None
    if base.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise PreflightError(
            f"{where}: trainer.accelerator={base.trainer.accelerator!r} but no CUDA GPU is "
            "visible on this machine; valid: cpu or auto"
        )
    for fold in range(objective.folds):
        train_config = fold_config(base, objective, fold)
        label = f" (fold {fold} of {objective.folds})" if objective.folds > 1 else ""
        try:
            datamodule = RLDataModule(train_config)
            _check_episode_length(train_config, datamodule, where, label)
            val_env = make_vector_env(
                train_config, "val", num_envs=train_config.trainer.val_episodes,
                data=datamodule.data,
            )
            val_env.reset(seed=train_config.seed)
            _check_val_windows(train_config, val_env, where, label)
            val_env.close()
            obs = datamodule._last_obs
            bad = first_non_finite(obs)
            if bad is not None:
                raise PreflightError(f"{where}: the first training {bad}; valid: finite data")
            module = PPOLightningModule(
                train_config.ppo, train_config.model,
                datamodule.observation_space, datamodule.action_space,
            )
            with torch.no_grad():
                logits, value = module(obs)
            if not (torch.isfinite(logits).all() and torch.isfinite(value).all()):
                raise PreflightError(
                    f"{where}: the policy's first forward pass is not finite; valid: a model "
                    "config and data with finite outputs"
                )
            datamodule.env.close()
        except PreflightError:
            raise
        except DataError as error:  # names the data file, line and column
            raise PreflightError(f"{where}: data{label}: {_first_line(error)}") from None
        except (ConfigError, ValueError, TypeError, ImportError, RuntimeError) as error:
            raise PreflightError(
                f"{where}: the base config does not build{label}: {_first_line(error)}"
            ) from None
        metrics = logged_metrics(
            train_config,
            periods_per_year=None if datamodule.data is None else datamodule.data.periods_per_year,
        )
        missing = [m for m in objective.metrics if m not in metrics]
        if missing:
            raise PreflightError(
                f"{where}: objective.metrics: {missing[0]!r} is never logged by a validation; "
                f"valid: {', '.join(metrics)}"
            )


def _steps_available(env: object) -> int | None:
    """Steps an FX env's split holds after the observation lookback (None: a gymnasium env,
    whose episodes are its own)."""
    engine = getattr(env, "engine", None)
    return None if engine is None else int(engine.tables.last - engine.tables.first)


def _check_episode_length(
    config: TrainConfig, datamodule: RLDataModule, where: str, label: str
) -> None:
    available = _steps_available(datamodule.env)
    if available is not None and config.env.episode_length > available:
        raise PreflightError(
            f"{where}: env.episode_length={config.env.episode_length} is longer than the train "
            f"split{label}, which has {available} steps after the observation lookback; "
            f"valid: 1..{available} (or more data)"
        )


def _check_val_windows(config: TrainConfig, env: object, where: str, label: str) -> None:
    available = _steps_available(env)
    if available is not None and config.trainer.val_episodes > available:
        raise PreflightError(
            f"{where}: trainer.val_episodes={config.trainer.val_episodes} windows do not fit "
            f"the val split{label}, which has {available} steps; valid: 1..{available}"
        )


def check_existing_study(
    study: optuna.Study, config: StudyConfig, *, allow_space_change: bool = False
) -> None:
    """Refuse a study file that changed what the stored study optimises.

    Raises:
        PreflightError: Changed directions or metrics; a changed distribution of a parameter
            that stored trials sampled, unless ``allow_space_change``.
    """
    where = str(config.path) if config.path is not None else config.name
    try:
        check_stored_objectives(study, config)
    except StudyError as error:
        raise PreflightError(str(error)) from None
    if allow_space_change:
        return
    wanted = config.space.distributions()
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            if name in wanted and wanted[name] != distribution:
                raise PreflightError(
                    f"{where}: search_space: {name} is {wanted[name]} but stored trial "
                    f"{trial.number} sampled it from {distribution}; TPE would mix the two "
                    "histories; valid: the stored distribution, a new study name, or "
                    "--allow-space-change"
                )


def preflight(
    config: StudyConfig,
    *,
    study: optuna.Study | None = None,
    allow_space_change: bool = False,
) -> None:
    """Every check of this module, in order; ``study`` is the stored study if it exists.

    Raises:
        PreflightError: The first problem found, in one line.
    """
    where = str(config.path) if config.path is not None else config.name
    check_artifact_dir(Path(config.artifact_dir), where=where)
    if study is not None:
        check_existing_study(study, config, allow_space_change=allow_space_change)
    check_training_builds(config)
