"""Structured configs of the ``fxai_optuna`` sweeper, its samplers and its pruners.

The sweeper's keys are those of hydra-optuna-sweeper's ``OptunaSweeperConf`` (``sampler``,
``direction``, ``storage``, ``study_name``, ``n_trials``, ``n_jobs``, ``max_failure_rate``,
``search_space``, ``params``, ``custom_search_space``) plus ``pruner`` and a study file's
heartbeat keys (``heartbeat_interval``, ``grace_period``, ``max_retry``), so a config written
for that plugin runs after ``override hydra/sweeper: optuna`` becomes ``fxai_optuna``. The sampler
and pruner groups mirror the Optuna 5 constructors (arguments that take Python objects other
than samplers are left out)::

    hydra/sweeper/sampler=tpe|random|grid|cmaes|nsga2|gp|qmc   (default tpe; nsgaii = nsga2)
    hydra/sweeper/pruner=median|percentile|successive_halving|hyperband|threshold|wilcoxon|none
                                                                        (nop = none)

The names are those of ``fxai_tune.tune.SAMPLERS`` and ``PRUNERS``, which a study file's
``sampler.name`` / ``pruner.name`` take (one registry; a test checks they agree).
"""

# No ``from __future__ import annotations`` here: Hydra's plugin scanner executes this module
# before it is in ``sys.modules``, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

__all__ = [
    "CmaEsSamplerConfig",
    "FxaiOptunaSweeperConf",
    "GPSamplerConfig",
    "GridSamplerConfig",
    "HyperbandPrunerConfig",
    "MedianPrunerConfig",
    "NSGAIISamplerConfig",
    "NopPrunerConfig",
    "PercentilePrunerConfig",
    "PrunerConfig",
    "QMCSamplerConfig",
    "RandomSamplerConfig",
    "SamplerConfig",
    "SuccessiveHalvingPrunerConfig",
    "TPESamplerConfig",
    "ThresholdPrunerConfig",
    "WilcoxonPrunerConfig",
]

SWEEPER_TARGET = "hydra_plugins.fxai_optuna_sweeper.fxai_optuna_sweeper.FxaiOptunaSweeper"


# -- samplers ----------------------------------------------------------------------------------


@dataclass
class SamplerConfig:
    """Any Optuna sampler: ``_target_`` names its class, the other keys its arguments."""

    _target_: str = MISSING


@dataclass
class TPESamplerConfig(SamplerConfig):
    """`optuna.samplers.TPESampler` (None: Optuna's own default)."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    group: bool = False
    warn_independent_sampling: bool | None = None
    constant_liar: bool = True


@dataclass
class RandomSamplerConfig(SamplerConfig):
    """`optuna.samplers.RandomSampler`."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GridSamplerConfig(SamplerConfig):
    """`optuna.samplers.GridSampler`; the grid is built from the sweep's discrete params."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: int | None = None


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """`optuna.samplers.CmaEsSampler`."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    independent_sampler: Any = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: str | None = None
    popsize: int | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """`optuna.samplers.NSGAIISampler` (multi-objective)."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class GPSamplerConfig(SamplerConfig):
    """`optuna.samplers.GPSampler` (Gaussian-process Bayesian optimisation)."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    independent_sampler: Any = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    warn_independent_sampling: bool = True


@dataclass
class QMCSamplerConfig(SamplerConfig):
    """`optuna.samplers.QMCSampler` (quasi-Monte Carlo)."""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class MOTPESamplerConfig(SamplerConfig):
    """Removed in Optuna 4: selecting it fails with a message naming the replacement."""

    _target_: str = "hydra_plugins.fxai_optuna_sweeper._impl.motpe_removed"


# -- pruners -----------------------------------------------------------------------------------


@dataclass
class PrunerConfig:
    """Any Optuna pruner: ``_target_`` names its class, the other keys its arguments."""

    _target_: str = MISSING


@dataclass
class MedianPrunerConfig(PrunerConfig):
    """`optuna.pruners.MedianPruner`."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConfig(PrunerConfig):
    """`optuna.pruners.PercentilePruner`."""

    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    """`optuna.pruners.SuccessiveHalvingPruner` (ASHA)."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    """`optuna.pruners.HyperbandPruner`."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class ThresholdPrunerConfig(PrunerConfig):
    """`optuna.pruners.ThresholdPruner`."""

    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class WilcoxonPrunerConfig(PrunerConfig):
    """`optuna.pruners.WilcoxonPruner`."""

    _target_: str = "optuna.pruners.WilcoxonPruner"
    p_threshold: float = 0.1
    n_startup_steps: int = 2


@dataclass
class NopPrunerConfig(PrunerConfig):
    """`optuna.pruners.NopPruner`: never prunes."""

    _target_: str = "optuna.pruners.NopPruner"


# -- the sweeper -------------------------------------------------------------------------------


@dataclass
class FxaiOptunaSweeperConf:
    """``hydra/sweeper=fxai_optuna``: Optuna search over Hydra overrides, with pruning."""

    _target_: str = SWEEPER_TARGET
    # _self_ first: a selected hydra/sweeper/pruner option must override ``pruner: None``
    defaults: list[Any] = field(
        default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}]
    )

    sampler: SamplerConfig = MISSING
    """Instantiable Optuna sampler; pick one with ``hydra/sweeper/sampler=NAME``."""
    direction: Any = None
    """``minimize``/``maximize``, or a list of them for a multi-objective task (which returns
    a list of floats); None: the app's ``objective.directions`` (``fxai_tune.train``), else
    ``minimize``."""
    storage: str | None = None
    """Storage URL (``sqlite:///x.db``, ``postgresql://...``, ``journal:///x.log``); None keeps
    the study in memory. With a password: ``${oc.env:FXAI_TUNE_STORAGE}`` (a literal one is
    swapped for that reference so that no job's ``.hydra/*.yaml`` holds it; docs/hydra.md)."""
    study_name: str | None = None
    """Name of the study; several sweep processes with one storage and name share the study.
    The CLI's rule: a letter or digit, then letters, digits, ``_ . -``, no ``..``."""
    n_trials: int = 20
    """Trial cap of the whole study (all sweep processes together, earlier runs included)."""
    n_jobs: int = 1
    """Trials asked at once and handed to the launcher as one batch."""
    max_failure_rate: float = 0.0
    """Stop the sweep once more than this share of its finished jobs failed (pruned jobs are
    not failures)."""
    search_space: Any = None
    """A search space file (``search_spaces/NAME.yaml``, for ``fxai_tune.train``), or
    hydra-optuna-sweeper's deprecated mapping ``{key: {type, low, high, log, step, choices}}``."""
    params: dict[str, Any] | None = None
    """Override grammar per key: ``choice(...)``, ``range(a,b[,step])``, ``interval(a,b)``,
    ``int(interval(a,b))``, ``tag(log, interval(a,b))``, or a fixed value."""
    custom_search_space: str | None = None
    """Dotted path of a ``fn(cfg: DictConfig, trial: optuna.Trial) -> None`` that suggests
    more parameters (they become overrides too)."""
    pruner: Any = None
    """Instantiable Optuna pruner (``hydra/sweeper/pruner=NAME``); None: Optuna's default
    MedianPruner. Pruning acts on tasks that report to `current_trial()`."""
    artifact_dir: str | None = None
    """Where jobs store their trials' artifacts (Optuna's FileSystemArtifactStore: equity
    curve, metrics CSV, checkpoint), as a study file's ``artifact_dir``; None:
    ``<hydra.sweep.dir>/artifacts``. Jobs on other hosts need a shared path."""
    # the three below have the defaults of a study file's keys (fxai_tune.tune.StudyConfig)
    heartbeat_interval: int | None = 10
    """Seconds between heartbeats of a running job's trial (storages with a heartbeat: RDB,
    Redis, gRPC); None disables the heartbeat and the retry of stale trials."""
    grace_period: int | None = 30
    """Seconds without heartbeat after which a trial (its sweep process was killed) is failed
    by the next sweep or worker of the study and re-run with its parameters."""
    max_retry: int | None = 3
    """Times a stale trial is re-run; None: without limit."""


_STORE = ConfigStore.instance()
_STORE.store(group="hydra/sweeper", name="fxai_optuna", node=FxaiOptunaSweeperConf,
             provider="fxai_optuna_sweeper")
for _name, _node in {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
    "grid": GridSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "nsga2": NSGAIISamplerConfig,  # the study files' name (fxai_tune.tune.SAMPLERS)
    "gp": GPSamplerConfig,
    "qmc": QMCSamplerConfig,
    "motpe": MOTPESamplerConfig,
}.items():
    _STORE.store(group="hydra/sweeper/sampler", name=_name, node=_node,
                 provider="fxai_optuna_sweeper")
for _name, _node in {
    "median": MedianPrunerConfig,
    "percentile": PercentilePrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
    "threshold": ThresholdPrunerConfig,
    "wilcoxon": WilcoxonPrunerConfig,
    "nop": NopPrunerConfig,
    "none": NopPrunerConfig,  # the study files' name (fxai_tune.tune.PRUNERS)
}.items():
    _STORE.store(group="hydra/sweeper/pruner", name=_name, node=_node,
                 provider="fxai_optuna_sweeper")
