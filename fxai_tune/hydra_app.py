"""The Hydra front door: structured configs of ``fxai_tune/conf``, their `TrainConfig`, the task.

``python -m fxai_tune.train [key=value ...]`` composes ``fxai_tune/conf/config.yaml``, converts
it to a `TrainConfig` (`to_train_config`), trains, and returns the objective value for sweepers
(`run_task`). The composed tree has `TrainConfig`'s shape, so every dotted path of the tuner's
search spaces (``ppo.learning_rate``, ``env.reward.weights.drawdown``) is a Hydra key too:

=================  ============================  ===============================================
Hydra group        package (where it writes)     `TrainConfig` field
=================  ============================  ===============================================
``model``          ``model``                     ``model`` (`ModelConfig`)
``training``       ``_global_``                  ``ppo`` (`PPOConfig`) + ``curriculum``
``environment``    ``env``                       ``env`` (`EnvConfig`)
``data``           ``data``                      ``data`` (`DataConfig`)
``hardware``       ``trainer``                   ``trainer.accelerator/devices/strategy/
                                                 precision/torch_threads``
``callbacks``      ``_global_``                  ``trainer.early_stopping_patience/
                                                 enable_progress_bar`` + ``callbacks`` (below)
``logger``         ``logger``                    ``train(loggers=...)``
``hparams_search`` ``_global_``                  a sweep: ``hydra.sweeper`` and ``objective``
=================  ============================  ===============================================

Keys of the lightning guide's ``trainer`` block that PPO spells differently are mapped when
not null: ``trainer.max_epochs`` (PPO iterations, one Lightning epoch each) sets
``ppo.total_timesteps = max_epochs * n_envs * n_steps``; ``trainer.val_check_interval`` (PPO
iterations between validations) sets ``trainer.val_every_n_iterations``;
``trainer.gradient_clip_val`` sets ``ppo.max_grad_norm``; ``trainer.precision`` also takes
Lightning's short forms 32, 16, bf16, 64. Keys only the Hydra app has: ``callbacks``,
``logger``, ``objective``, ``experiment_name``, ``report``.

``env.windows`` is a mapping that Hydra merges key by key, so an override keeps timeframes it
does not name; set one to null to drop it: ``env.windows={1h:32,4h:8,1d:null}``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from fxai_tune.env import EnvConfig
from fxai_tune.rl import MONITOR, PPOConfig, TrainConfig, TrainerConfig, build_train_config

__all__ = [
    "SCHEMA_NAME",
    "CallbacksConfig",
    "HydraEnvConfig",
    "HydraTrainConfig",
    "HydraTrainerConfig",
    "LoggerConfig",
    "ObjectiveConfig",
    "preflight_sweep",
    "register_configs",
    "run_task",
    "to_train_config",
]

log = logging.getLogger(__name__)

SCHEMA_NAME = "fxai_train_schema"
"""ConfigStore name of `HydraTrainConfig` (the first entry of ``conf/config.yaml``'s defaults)."""

HYDRA_ONLY_KEYS = ("callbacks", "logger", "objective", "experiment_name", "report")
"""Top-level keys of the Hydra config that are not `TrainConfig` fields."""

PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


# -- structured configs --------------------------------------------------------------------------


@dataclass
class HydraEnvConfig(EnvConfig):
    """`EnvConfig` whose ``windows`` come from the ``environment`` group (no merged default)."""

    windows: dict[str, int | None] = MISSING  # type: ignore[assignment]
    """Timeframe -> bars in that observation branch; a timeframe set to null is dropped."""


@dataclass
class HydraTrainerConfig(TrainerConfig):
    """`TrainerConfig` plus the Lightning-style keys of the guide's ``trainer`` block."""

    max_epochs: int | None = None
    """PPO iterations (one Lightning epoch each); not null: ppo.total_timesteps = max_epochs *
    ppo.n_envs * ppo.n_steps."""
    val_check_interval: int | None = None
    """PPO iterations between validations; not null: sets trainer.val_every_n_iterations."""
    gradient_clip_val: float | None = None
    """Global gradient-norm clip; not null: sets ppo.max_grad_norm."""


@dataclass
class CallbacksConfig:
    """Callbacks of the Hydra app beyond the ones every run has."""

    checkpointing: bool = True
    """Save the best (on val/episode_reward) and last checkpoints at each validation."""
    pruning: bool = True
    """In an ``fxai_optuna`` sweep, report ``objective.metrics[0]`` to the job's trial at each
    validation and stop when its pruner says so (single-objective sweeps only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Name -> instantiable Lightning callback (``{_target_: ..., arg: ...}``)."""


@dataclass
class LoggerConfig:
    """Experiment loggers of the run."""

    enabled: bool = True
    """TensorBoard and CSV logs in the run directory."""


@dataclass
class ObjectiveConfig:
    """What the task returns to a sweeper: the study file's ``objective`` block, scored by
    the same code (`fxai_tune.tune.score_trial`)."""

    metrics: list[str] = field(default_factory=lambda: [MONITOR])
    """Validation metrics returned, one per direction (a list is returned for several):
    val/episode_reward (the net trading score), val/sharpe, val/sortino, val/calmar,
    val/max_drawdown, val/trades ...; never val/shaped_reward when env.reward.* is swept."""
    directions: list[str] = field(default_factory=lambda: ["maximize"])
    """maximize or minimize per metric; must equal the sweep's hydra.sweeper.direction."""
    reduce: str = "last"
    """last (what a retrain reproduces) or best (on the first metric) validation; every
    metric comes from that one validation."""
    folds: int = 1
    """Walk-forward folds over train + val; the value is the mean over folds."""
    embargo_bars: int = 0
    """Bars between a fold's train and val windows beyond the observation lookback."""
    seeds_per_trial: int = 1
    """Training seeds per job; the value is their mean."""

    def __post_init__(self) -> None:
        self.metrics, self.directions = list(self.metrics), list(self.directions)
        self.spec()
        if isinstance(self.seeds_per_trial, bool) or self.seeds_per_trial < 1:
            raise ValueError(
                f"objective.seeds_per_trial: got {self.seeds_per_trial!r}; valid: an integer >= 1"
            )

    def spec(self) -> Any:
        """The `ObjectiveSpec` the shared scoring path takes."""
        from fxai_tune.tune._scoring import objective_of

        return objective_of(self)


@dataclass
class HydraTrainConfig(TrainConfig):
    """Schema of ``conf/config.yaml``: a `TrainConfig` plus the Hydra app's own keys."""

    env: HydraEnvConfig = MISSING  # type: ignore[assignment]
    """Trading environment: set by the ``environment`` group (its windows have no default)."""
    trainer: HydraTrainerConfig = field(  # type: ignore[assignment]
        default_factory=HydraTrainerConfig
    )
    """Lightning trainer settings, with the guide's aliases."""
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    """Checkpointing, pruning and extra callbacks."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """TensorBoard/CSV logging."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """The value returned to sweepers."""
    experiment_name: str = "fxai"
    """Names the output directories (outputs/NAME/..., multirun/NAME/...)."""
    report: bool = False
    """After training, report the best checkpoint on the test split (never in a sweep: the
    search does not read the test split)."""


def register_configs() -> None:
    """Store `HydraTrainConfig` in Hydra's ConfigStore as ``fxai_train_schema``."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=HydraTrainConfig)


register_configs()


# -- conversion ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def to_train_config(cfg: DictConfig, *, run_dir: str | None = None) -> TrainConfig:
    """The validated `TrainConfig` of a composed Hydra config (see the module docstring).

    Also accepts a bare `TrainConfig` YAML (what ``fxai-tune export-best`` writes) loaded as
    the primary config.

    Args:
        cfg: The job's config (``conf/config.yaml`` composed, or an exported config).
        run_dir: Directory of the run; None keeps ``cfg.run_dir``.

    Raises:
        fxai_tune.rl.ConfigError: One line naming the bad key or value.
    """
    values: dict[str, Any] = {}
    for key in cfg:
        if key in (*HYDRA_ONLY_KEYS, "hydra") or (key == "run_dir" and run_dir is not None):
            continue
        values[str(key)] = _plain(cfg[key])
    if run_dir is not None:
        values["run_dir"] = run_dir
    trainer = values.get("trainer")
    if isinstance(trainer, dict):
        _map_trainer_aliases(values, trainer)
    env = values.get("env")
    if isinstance(env, dict) and isinstance(env.get("windows"), dict):
        env["windows"] = {tf: n for tf, n in env["windows"].items() if n is not None}
    return build_train_config(values)


def _map_trainer_aliases(values: dict[str, Any], trainer: dict[str, Any]) -> None:
    ppo = values.setdefault("ppo", {})
    max_epochs = trainer.pop("max_epochs", None)
    interval = trainer.pop("val_check_interval", None)
    clip = trainer.pop("gradient_clip_val", None)
    if interval is not None:
        trainer["val_every_n_iterations"] = interval
    if clip is not None:
        ppo["max_grad_norm"] = clip
    if max_epochs is not None:
        n_envs = ppo.get("n_envs", PPOConfig.n_envs)
        n_steps = ppo.get("n_steps", PPOConfig.n_steps)
        ppo["total_timesteps"] = int(max_epochs) * int(n_envs) * int(n_steps)
    precision = trainer.get("precision")
    if precision is not None and str(precision) in PRECISION_ALIASES:
        trainer["precision"] = PRECISION_ALIASES[str(precision)]


def _section(cfg: DictConfig, key: str, schema: type) -> Any:
    """The Hydra-only section ``key`` as a ``schema`` instance (defaults when absent)."""
    merged = OmegaConf.merge(OmegaConf.structured(schema), cfg.get(key) or {})
    return OmegaConf.to_object(merged)


# -- the task ------------------------------------------------------------------------------------


def preflight_sweep(cfg: DictConfig) -> None:
    """Refuse, before a sweep's first trial, a config that every job would fail on.

    The ``fxai_optuna`` sweeper calls it (as the task's ``fxai_preflight``) with the config
    its jobs get before sampling: the checks of ``fxai-tune run``'s pre-flight
    (`fxai_tune.tune.check_config_builds`: the data loaded and validated, the envs and the
    policy built, the objective's metrics logged by a validation), so a bad data file, env or
    policy config is one line and exit code 2, not a failed trial per job (issue 11).

    Raises:
        fxai_tune.tune.PreflightError: One line naming the bad key or value.
    """
    import tempfile

    from fxai_tune.rl import ConfigError
    from fxai_tune.tune import PreflightError, check_config_builds

    where = "the sweep's job config"
    with tempfile.TemporaryDirectory(prefix="fxai-preflight-") as run_dir:
        try:
            objective: ObjectiveConfig = _section(cfg, "objective", ObjectiveConfig)
            config = to_train_config(cfg, run_dir=run_dir)
        except (ConfigError, ValueError, TypeError) as error:
            lines = str(error).strip().splitlines()
            first = lines[0] if lines else type(error).__name__
            raise PreflightError(f"{where}: {first}") from None
        check_config_builds(config, objective.spec(), where=where)


def sweep_provenance(cfg: DictConfig) -> dict[str, Any]:
    """What a sweep's study records on creation (the ``fxai_optuna`` sweeper calls it as the
    task's ``fxai_provenance`` with its jobs' config): package versions, the git commit of the
    working directory, the data files' hashes (`fxai_tune.tune._provenance.provenance`)."""
    import tempfile

    from fxai_tune.tune._provenance import provenance

    with tempfile.TemporaryDirectory(prefix="fxai-provenance-") as run_dir:
        return provenance(to_train_config(cfg, run_dir=run_dir), project_dir=Path.cwd())


def _run_dir(cfg: DictConfig) -> str:
    """Hydra's job directory, unless ``run_dir=...`` was given on the command line."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    given = any(o.split("=", 1)[0].lstrip("+") == "run_dir" for o in hydra_cfg.overrides.task)
    return str(cfg.run_dir) if given else str(hydra_cfg.runtime.output_dir)


def _trial_context() -> Any:
    try:
        from hydra_plugins.fxai_optuna_sweeper import current_trial_context
    except ImportError:  # the plugin is not installed: no sweep can hand over a trial
        return None
    return current_trial_context()


def _extra_callbacks(callbacks: CallbacksConfig) -> list[Any]:
    from hydra.utils import instantiate

    built = []
    for name, spec in callbacks.extra.items():
        target = spec.get("_target_") if isinstance(spec, dict) else None
        if target is None:
            raise ValueError(f"callbacks.extra.{name} needs a _target_ (a Lightning callback "
                             f"class), got {spec!r}")
        log.info("Instantiating callback %s <%s>", name, target)
        built.append(instantiate(spec))
    return built


def run_task(cfg: DictConfig) -> float | list[float]:
    """Train the composed config and return its objective (a list for several metrics).

    Inside an ``fxai_optuna`` sweep the job's trial receives the config (user attr ``config``)
    and the validation metrics, samples the sweep's ``search_space`` file into the config,
    and prunes the run on ``objective.metrics[0]``. Scoring (seeds, folds, the validation
    each value comes from, what is recorded on the trial) is `fxai_tune.tune.score_trial`,
    the same as ``fxai-tune run``'s.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fxai_tune.rl import config_to_dict, final_report
    from optuna.artifacts import FileSystemArtifactStore

    from fxai_tune.tune import (
        artifact_upload,
        check_finite_objective,
        recording_outcome,
        score_trial,
    )

    objective: ObjectiveConfig = _section(cfg, "objective", ObjectiveConfig)
    callbacks: CallbacksConfig = _section(cfg, "callbacks", CallbacksConfig)
    logger: LoggerConfig = _section(cfg, "logger", LoggerConfig)
    report = bool(cfg.get("report", False))
    if report and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError("report=true reads the test split, which a sweep must not; valid: "
                         "report=false in multirun (retrain the best config with report=true)")
    config = to_train_config(cfg, run_dir=_run_dir(cfg))
    context = _trial_context()
    trial = context.trial if context is not None else None
    if context is not None:
        if list(context.directions) != objective.directions:
            raise ValueError(
                f"hydra.sweeper.direction {list(context.directions)} does not match "
                f"objective.directions {objective.directions} (metrics {objective.metrics})"
            )
        if context.search_space is not None:
            values = context.search_space.sample(trial, base=config)
            config = context.search_space.apply(config, values)
            log.info("Trial %d samples %s", trial.number, values)
        trial.set_user_attr("config", config_to_dict(config))
        trial.set_user_attr("run_dir", config.run_dir)

    spec = objective.spec()
    runs: list[Any] = []
    upload = None
    if context is not None and context.artifact_dir is not None:
        Path(context.artifact_dir).mkdir(parents=True, exist_ok=True)
        upload = artifact_upload(FileSystemArtifactStore(context.artifact_dir), trial)
    with recording_outcome(trial):  # wall_time_s, fail_reason: as `fxai-tune run` records
        result = score_trial(
            trial,
            config,
            spec,
            seeds_per_trial=objective.seeds_per_trial,
            prune=callbacks.pruning,
            train_kwargs={"loggers": logger.enabled, "checkpointing": callbacks.checkpointing},
            extra_callbacks=_extra_callbacks(callbacks),
            upload=upload,
            on_run=runs.append,
        )
        if trial is not None:
            check_finite_objective(objective.metrics, result)
    if report:
        table = final_report(runs[-1])
        log.info("Test-split report (%s): %s", runs[-1].run_dir, table)
    log.info("Objective (%s validation, mean over %d fold(s)): %s", spec.reduce, spec.folds,
             dict(zip(objective.metrics, result, strict=True)))
    if not all(math.isfinite(v) for v in result):
        log.warning("The objective is not finite: %s", result)
    return result[0] if len(result) == 1 else result
