"""Study files: what a tuning study searches, how, on what budget, and where it is stored.

A study file (``studies/<name>.yaml``)::

    name: demo                          # default: the file's stem; [A-Za-z0-9][A-Za-z0-9_.-]*
    description: CPU demo               # free text (optional)
    base_config: configs/demo_base.yaml # TrainConfig YAML, relative to this file ...
    # base: {ppo: {n_envs: 8}}          # ... or an inline mapping (not both; neither = defaults)
    overrides: [trainer.accelerator=cpu]  # dotted key=value applied to the base config
    search_space: ppo_quick             # name (search_spaces/<name>.yaml), path, or a mapping
    direction: maximize                 # or directions: [maximize, minimize]
    objective:
      metrics: [val/episode_reward]     # one per direction; never val/shaped_reward when the
                                        # space tunes env.reward.* (the search would grade itself)
      reduce: last                      # last | best validation (all metrics from that one)
      folds: 1                          # walk-forward folds over train+val; value = their mean
      embargo_bars: 0                   # bars between a fold's train and val beyond lookback
    sampler: {name: tpe, seed: 0, options: {n_startup_trials: 5}}
    pruner: {name: median, options: {n_startup_trials: 3, n_warmup_steps: 1}}
    budget: {total_timesteps: 8192, val_every_n_iterations: 2}
    n_trials: 12                        # trial cap of the whole study (null: only timeout)
    timeout: null                       # seconds after which no new trial starts
    seeds_per_trial: 1                  # objective = mean over this many seeds
    storage: null                       # URL; null -> sqlite:///<this dir>/<name>.db
    artifact_dir: null                  # null -> <this dir>/artifacts/<name>
    # (a study shipped in the package stores both under $FXAI_TUNE_HOME/studies, default
    #  ./studies: never inside the installed package)
    max_failure_rate: 0.5               # stop the study when more trials than this fail
    heartbeat_interval: 10              # s; RDB heartbeat (null disables it)
    grace_period: 30                    # s without heartbeat before a trial is failed
    max_retry: 3                        # re-runs of a trial whose worker died (null: no limit)
    outage_window: 300                  # s a worker rides out an unreachable database

Samplers: tpe, random, cmaes, gp, qmc, nsga2; pruners: median, percentile, successive_halving,
hyperband, none. ``options`` are the keyword arguments of the Optuna class, checked against its
signature (arguments that take Python objects, such as callables, cannot be set from YAML).
Errors are `StudyError` (a ValueError) with a one-line message ``FILE: KEY: problem; valid: ...``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import math
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from fxai_tune import HOME_ENV
from fxai_tune.rl import ConfigError, TrainConfig, build_train_config, load_train_config
from fxai_tune.tune._seeding import TrialSeededSampler
from fxai_tune.tune._scoring import (
    DIRECTIONS,
    REDUCTIONS,
    ObjectiveSpec,
    check_unshaped_objective,
    objective_of,
)
from fxai_tune.tune._space import (
    PACKAGE_DIR,
    SearchSpace,
    SpaceError,
    find_named_file,
    load_search_space,
    read_yaml,
)
from fxai_tune.tune._storage import StorageError, normalize_storage_url

__all__ = [
    "DIRECTIONS",
    "PRUNERS",
    "REDUCTIONS",
    "SAMPLERS",
    "PrunerConfig",
    "SamplerConfig",
    "StudyConfig",
    "StudyError",
    "check_stored_objectives",
    "check_study_name",
    "load_study_config",
    "make_pruner",
    "study_data_dir",
    "make_sampler",
    "PRUNER_ALIASES",
    "SAMPLER_ALIASES",
    "GRID_ERROR",
    "grid_of",
    "grid_values",
]

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "grid": optuna.samplers.GridSampler,
}
"""The samplers of both front doors: a study file's ``sampler.name`` and the Hydra sweeper's
``hydra/sweeper/sampler=NAME`` group (tests/test_hydra_sweeper.py checks they agree)."""
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "none": optuna.pruners.NopPruner,
}
"""The pruners of both front doors (``pruner.name``, ``hydra/sweeper/pruner=NAME``)."""
# hydra-optuna-sweeper's group names, which configs migrating from it use: accepted in both
SAMPLER_ALIASES = {"nsgaii": "nsga2"}
PRUNER_ALIASES = {"nop": "none"}
GRID_ERROR = "the grid sampler needs discrete params: choice(...) or range(...)"

# Optional packages some samplers import lazily (at their first trial); checked up front.
_SAMPLER_NEEDS = {"cmaes": ("cmaes",), "gp": ("scipy", "torch"), "qmc": ("scipy",)}
# Samplers that handle a single objective only.
_SINGLE_OBJECTIVE = ("cmaes",)
# its seed scrambles one sequence that all workers walk through (Optuna's QMCSampler docs)
_SAME_SEED_EVERYWHERE = ("qmc", "grid")
# Constructor arguments that take Python objects (callables, samplers, trials) are not options.
_OBJECT_ARGUMENT = re.compile(r"Callable|Sampler|Base[A-Z]|FrozenTrial|Study")
# a study name becomes a folder (artifacts/<name>) and a file name (<name>.db): no '..', no
# path separator, no leading dot (issue 12)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_MAX_LENGTH = 128
NAME_RULE = (
    f"a letter or digit, then letters, digits, '_', '.' or '-' (no '..'), at most "
    f"{NAME_MAX_LENGTH} characters"
)

_KEYS = (
    "name",
    "description",
    "base_config",
    "base",
    "overrides",
    "search_space",
    "direction",
    "directions",
    "objective",
    "sampler",
    "pruner",
    "budget",
    "n_trials",
    "timeout",
    "seeds_per_trial",
    "storage",
    "artifact_dir",
    "max_failure_rate",
    "heartbeat_interval",
    "grace_period",
    "max_retry",
    "outage_window",
)


class StudyError(ValueError):
    """A study file that cannot be used; the message is one line naming file and key."""


def check_study_name(name: Any) -> str:
    """``name`` if it is a valid study name (`NAME_RULE`), which the CLI and Hydra share.

    Raises:
        StudyError: ``got NAME; valid: RULE``.
    """
    if (
        not isinstance(name, str)
        or len(name) > NAME_MAX_LENGTH
        or not _NAME.fullmatch(name)
        or ".." in name
    ):
        raise StudyError(f"got {name!r}; valid: {NAME_RULE}")
    return name


@dataclasses.dataclass
class SamplerConfig:
    """Which Optuna sampler, seeded how, with which options."""

    name: str = "tpe"
    """A name of `SAMPLERS` (tpe, random, cmaes, gp, qmc, nsga2, grid) or nsgaii (nsga2)."""
    seed: int | None = None
    """Sampler seed; None draws one. Trial N draws from ``(seed, N)`` (`make_sampler`)."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments of the Optuna sampler class (e.g. n_startup_trials)."""


@dataclasses.dataclass
class PrunerConfig:
    """Which Optuna pruner, with which options."""

    name: str = "median"
    """A name of `PRUNERS` (median, percentile, successive_halving, hyperband, threshold,
    wilcoxon, none) or nop (none)."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments of the Optuna pruner class (e.g. n_warmup_steps)."""


@dataclasses.dataclass
class StudyConfig:
    """A loaded, validated study; `load_study_config` builds it."""

    name: str
    """Optuna study name."""
    path: Path | None
    """The study file."""
    base_config: TrainConfig
    """Validated base training config: file or inline values, overrides and budget applied."""
    space: SearchSpace
    """Validated search space, bound to ``base_config`` for constraint operands."""
    directions: list[str]
    """One of maximize/minimize per objective."""
    metrics: list[str]
    """Validation metric of each objective (e.g. val/episode_reward), one per direction."""
    reduce: str = "last"
    """Which validation scores a run: the last (what export-best + train reproduces) or the
    best on the first metric (all metrics from that one validation)."""
    folds: int = 1
    """Walk-forward folds over train + val; the objective is the mean over folds."""
    embargo_bars: int = 0
    """Bars between a fold's train and val windows beyond the observation lookback."""
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    """Sampler settings (`make_sampler`)."""
    pruner: PrunerConfig = dataclasses.field(default_factory=PrunerConfig)
    """Pruner settings (`make_pruner`)."""
    total_timesteps: int | None = None
    """Budget per trial in env steps (applied as ppo.total_timesteps); None keeps the base's."""
    val_every_n_iterations: int | None = None
    """Validation interval (trainer.val_every_n_iterations); None keeps the base's."""
    n_trials: int | None = None
    """Trial cap of the whole study; None runs until ``timeout``."""
    timeout: float | None = None
    """Seconds after which no new trial starts; None: no limit."""
    seeds_per_trial: int = 1
    """Training seeds per trial; the objective is their mean."""
    storage: str = ""
    """Storage URL (default ``sqlite:///<studies dir>/<name>.db``)."""
    artifact_dir: Path = Path("studies/artifacts")
    """Directory of the trial artifacts (checkpoints, plots, CSVs)."""
    max_failure_rate: float = 0.5
    """Share of failed trials above which the study stops."""
    heartbeat_interval: int | None = 10
    """Seconds between heartbeats of a running trial (RDB storages); None disables."""
    grace_period: int | None = 30
    """Seconds without heartbeat before a running trial is failed and retried."""
    max_retry: int | None = 3
    """Times a trial whose worker died (stale heartbeat) is re-run with its parameters;
    None: without limit."""
    outage_window: float = 300.0
    """Seconds a worker keeps retrying storage calls while the database is unreachable
    (training goes on); past it the worker stops with one line naming host and port."""
    search_space: str = ""
    """The search space as the file names it (name or path)."""
    description: str = ""
    """Free text."""

    @property
    def direction(self) -> str:
        """The single direction of a single-objective study."""
        if len(self.directions) != 1:
            raise ValueError(f"study {self.name!r} has {len(self.directions)} objectives")
        return self.directions[0]

    @property
    def multi_objective(self) -> bool:
        """Whether the study optimises more than one metric."""
        return len(self.directions) > 1

    @property
    def objective(self) -> ObjectiveSpec:
        """What a trial's value is (`score_trial`)."""
        return objective_of(self)

    def sample_config(self, trial: optuna.trial.BaseTrial) -> tuple[dict[str, Any], TrainConfig]:
        """Sample ``trial``'s values and the config they give (base config + values)."""
        values = self.space.sample(trial, base=self.base_config)
        return values, self.space.apply(self.base_config, values)


def check_stored_objectives(study: optuna.Study, config: StudyConfig) -> None:
    """Refuse a study file whose directions or objective metrics differ from the stored
    study's: Optuna would keep optimising the stored directions without a word (issue 12).

    A stored study without metric names (e.g. made by another tool) passes on its directions.

    Raises:
        StudyError: One line naming the file, the key, the stored and the asked values.
    """
    where = str(config.path) if config.path is not None else config.name
    stored = [d.name.lower() for d in study.directions]
    if stored != list(config.directions):
        key = "direction" if len(config.directions) == 1 else "directions"
        raise StudyError(
            f"{where}: {key}: the stored study {study.study_name!r} optimises {stored}, the file "
            f"asks {list(config.directions)}; valid: {stored}, or a new study name"
        )
    names = study.metric_names
    if names is not None and list(names) != list(config.metrics):
        raise StudyError(
            f"{where}: objective.metrics: the stored study {study.study_name!r} recorded "
            f"{list(names)}, the file asks {list(config.metrics)}; valid: {list(names)}, or a "
            "new study name"
        )


# --------------------------------------------------------------------------------------------
# Samplers and pruners


def _options(
    cls: type, options: Mapping[str, Any], key: str, *, reserved: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check ``options`` against ``cls.__init__``'s keyword arguments."""
    signature = inspect.signature(cls.__init__)
    accepted = {
        name: p
        for name, p in signature.parameters.items()
        if name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and name not in reserved
        and not _OBJECT_ARGUMENT.search(str(p.annotation))
    }
    if not isinstance(options, Mapping):
        raise StudyError(f"{key}: expected a mapping of options, got {options!r}")
    for name in options:
        if name in reserved:
            raise StudyError(f"{key}.{name}: set it one level up, not under options")
        if name not in accepted:
            raise StudyError(
                f"{key}.{name}: unknown option of {cls.__name__}; valid: {sorted(accepted)}"
            )
    for name, value in options.items():
        expected = _annotation_text(accepted[name].annotation)
        if not _fits(value, expected):
            raise StudyError(
                f"{key}.{name}: got {value!r} ({type(value).__name__}); valid: {expected}"
            )
    missing = [n for n, p in accepted.items() if p.default is p.empty and n not in options]
    if missing:
        raise StudyError(f"{key}: {cls.__name__} needs option {missing[0]!r}")
    return dict(options)


_SCALARS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "None": (type(None),),
}


def _annotation_text(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _fits(value: Any, annotation: str) -> bool:
    """Whether a YAML ``value`` fits an Optuna argument annotation such as ``int | None``.

    Only scalar annotations are checked (``n_startup_trials: five`` would fail deep inside
    Optuna at the first trial, issue 11); any other annotation accepts the value.
    """
    parts = [part.strip() for part in annotation.split("|")]
    if not parts or any(part not in _SCALARS for part in parts):
        return True
    for part in parts:
        types_ = _SCALARS[part]
        if isinstance(value, bool) and bool not in types_:
            continue
        if isinstance(value, types_):
            return True
    return False


def _construct(cls: type, kwargs: dict[str, Any], key: str) -> Any:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        text = str(error).strip()
        message = text.splitlines()[0] if text else type(error).__name__
        raise StudyError(f"{key}: {cls.__name__} rejects {kwargs!r}: {message}") from None


def grid_values(name: str, distribution: optuna.distributions.BaseDistribution) -> list[Any]:
    """The grid points of a discrete distribution (for `optuna.samplers.GridSampler`).

    Raises:
        StudyError: ``distribution`` is continuous (no grid).
    """
    from decimal import Decimal

    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        count = round((distribution.high - distribution.low) / distribution.step) + 1
        low, step = Decimal(str(distribution.low)), Decimal(str(distribution.step))
        return [float(low + k * step) for k in range(count)]
    raise StudyError(f"{name}: {GRID_ERROR}, got {distribution}")


def grid_of(
    distributions: Mapping[str, optuna.distributions.BaseDistribution],
) -> dict[str, list[Any]]:
    """The grid sampler's search space: every parameter's grid points (`grid_values`)."""
    return {name: grid_values(name, dist) for name, dist in distributions.items()}


def make_sampler(
    config: SamplerConfig,
    *,
    n_objectives: int = 1,
    distributions: Mapping[str, optuna.distributions.BaseDistribution] | None = None,
) -> optuna.samplers.BaseSampler:
    """Build the Optuna sampler of ``config``.

    With a seed, trial N draws from a sampler seeded from ``(seed, N)``
    (`TrialSeededSampler`): the same on every worker and every start, so a seeded study is
    reproducible and never repeats a trial when continued or shared. QMC takes the seed as
    is (every process must scramble its sequence alike; the sequence index is in the study).

    Args:
        config: Sampler name (or its hydra-optuna-sweeper alias), seed and options.
        n_objectives: Objectives of the study (cmaes handles one only).
        distributions: The search space; the grid sampler's grid is built from it.

    Raises:
        StudyError: Unknown name or option, a missing optional package, bad option values.

    Example:
        >>> make_sampler(SamplerConfig("tpe", seed=0, options={"n_startup_trials": 5}))
        <optuna.samplers._tpe.sampler.TPESampler object at ...>
    """
    name = SAMPLER_ALIASES.get(config.name, config.name)
    if name not in SAMPLERS:
        raise StudyError(
            f"sampler.name: unknown sampler {config.name!r}; valid: {', '.join(SAMPLERS)}"
        )
    config = dataclasses.replace(config, name=name)
    if n_objectives > 1 and config.name in _SINGLE_OBJECTIVE:
        valid = ", ".join(n for n in SAMPLERS if n not in _SINGLE_OBJECTIVE)
        raise StudyError(
            f"sampler.name: {config.name} handles one objective only; valid for "
            f"{n_objectives} objectives: {valid}"
        )
    needs = _SAMPLER_NEEDS.get(config.name, ())
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        raise StudyError(
            f"sampler.name: the {config.name} sampler needs the package(s) {missing} "
            f"(pip install {' '.join(missing)}); valid without them: "
            f"{', '.join(n for n in SAMPLERS if n not in _SAMPLER_NEEDS)}"
        )
    cls = SAMPLERS[config.name]
    kwargs = _options(
        cls, config.options, "sampler.options", reserved=("seed", "search_space")
    )
    if config.name == "grid":
        kwargs["search_space"] = grid_of(distributions or {})
    if config.seed is None:
        return _construct(cls, kwargs, "sampler.options")
    if config.name in _SAME_SEED_EVERYWHERE:
        return _construct(cls, {**kwargs, "seed": config.seed}, "sampler.options")
    # each trial drawn from (seed, trial number): reproducible, never repeated (issue 12)
    return TrialSeededSampler(
        lambda seed: _construct(cls, {**kwargs, "seed": seed}, "sampler.options"), config.seed
    )


def make_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner:
    """Build the Optuna pruner of ``config`` (``none`` is `optuna.pruners.NopPruner`).

    Raises:
        StudyError: Unknown name or option, a missing required option, bad option values.

    Example:
        >>> make_pruner(PrunerConfig("median", {"n_warmup_steps": 1}))
        <optuna.pruners._median.MedianPruner object at ...>
    """
    name = PRUNER_ALIASES.get(config.name, config.name)
    if name not in PRUNERS:
        raise StudyError(
            f"pruner.name: unknown pruner {config.name!r}; valid: {', '.join(PRUNERS)}"
        )
    config = dataclasses.replace(config, name=name)
    cls = PRUNERS[config.name]
    if config.name == "none":
        if config.options:
            raise StudyError(
                f"pruner.options: pruner none takes no options, got {config.options!r}"
            )
        return cls()
    return _construct(cls, _options(cls, config.options, "pruner.options"), "pruner.options")


# --------------------------------------------------------------------------------------------
# Loading


def load_study_config(name_or_path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study file, its base config and its search space.

    Everything is checked here, before any trial runs: keys and values of the study, the
    sampler and pruner (built once), the storage URL's form, the base config (built), the
    search space (parsed, paths checked against `TrainConfig`, its bounds built with the base
    config).

    Args:
        name_or_path: A bare name (``demo`` -> ``studies/demo.yaml`` under the current
            directory, else the one shipped in the package) or a path to a YAML file.

    Raises:
        StudyError: One line naming the file, the key and what is valid.

    Example:
        >>> study = load_study_config("demo")
        >>> study.directions, study.metrics
        (['maximize'], ['val/episode_reward'])
    """
    path = find_named_file(name_or_path, "studies", StudyError, kind="study").resolve()
    data = read_yaml(path, StudyError)
    try:
        return _StudyParser(path).parse(data)
    except StudyError as error:
        message = str(error)
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        raise StudyError(message) from None


def study_data_dir(study_file: Path) -> Path:
    """Where a study file's default database and artifacts go (relative values start here).

    Beside the file, except for a study shipped in the package (``--study demo`` from any
    directory, or an installed copy): ``$FXAI_TUNE_HOME/studies``, by default
    ``./studies``. Nothing is ever written into the package or its source tree (issue 12).
    """
    study_file = study_file.resolve()
    if not study_file.is_relative_to(PACKAGE_DIR):
        return study_file.parent
    return Path(os.environ.get(HOME_ENV) or Path.cwd()).expanduser().resolve() / "studies"


class _StudyParser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.dir = path.parent
        self.data_dir = study_data_dir(path)

    def fail(self, key: str, problem: str) -> StudyError:
        return StudyError(f"{self.path}: {key}: {problem}")

    def int_value(
        self, data: Mapping[str, Any], key: str, default: Any, *, low: int, optional: bool
    ) -> Any:
        value = data.get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            valid = f"an integer >= {low}" + (" or null" if optional else "")
            raise self.fail(key, f"got {value!r}; valid: {valid}")
        return value

    def parse(self, data: Any) -> StudyConfig:
        if not isinstance(data, Mapping):
            raise StudyError(f"{self.path}: expected a mapping, got {type(data).__name__}")
        unknown = [k for k in data if k not in _KEYS]
        if unknown:
            raise self.fail(str(unknown[0]), f"unknown key; valid: {list(_KEYS)}")
        name = data.get("name", self.path.stem)
        try:
            check_study_name(name)
        except StudyError as error:
            raise self.fail("name", str(error)) from None
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise self.fail("description", f"expected text, got {description!r}")

        directions = self.directions(data)
        objective = self.objective(data.get("objective"), directions)
        sampler = self.sampler(data.get("sampler"))
        sampler.name = SAMPLER_ALIASES.get(sampler.name, sampler.name)
        pruner = self.pruner(data.get("pruner"))
        pruner.name = PRUNER_ALIASES.get(pruner.name, pruner.name)
        if len(directions) > 1 and pruner.name != "none":
            raise self.fail(
                "pruner.name", f"Optuna cannot prune multi-objective studies, got "
                f"{pruner.name!r}; valid: none"
            )
        try:
            with warnings.catch_warnings():  # built again, with its warnings, by the runner
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                make_sampler(sampler, n_objectives=len(directions))
                make_pruner(pruner)
        except StudyError as error:
            raise StudyError(f"{self.path}: {error}") from None

        total_timesteps, val_every = self.budget(data.get("budget"))
        n_trials = self.int_value(data, "n_trials", None, low=1, optional=True)
        timeout = data.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
            or not math.isfinite(timeout)
        ):
            raise self.fail("timeout", f"got {timeout!r}; valid: seconds > 0 or null")
        if n_trials is None and timeout is None:
            raise self.fail("n_trials", "neither n_trials nor timeout is set; valid: set one")
        seeds = self.int_value(data, "seeds_per_trial", 1, low=1, optional=False)
        rate = data.get("max_failure_rate", 0.5)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise self.fail("max_failure_rate", f"got {rate!r}; valid: a number in [0, 1]")
        heartbeat = self.int_value(data, "heartbeat_interval", 10, low=1, optional=True)
        grace = self.int_value(data, "grace_period", 30, low=1, optional=True)
        if heartbeat is not None and grace is not None and grace <= heartbeat:
            raise self.fail(
                "grace_period", f"got {grace} with heartbeat_interval={heartbeat}; valid: "
                "grace_period > heartbeat_interval"
            )
        max_retry = self.int_value(data, "max_retry", 3, low=0, optional=True)
        outage = data.get("outage_window", 300)
        if isinstance(outage, bool) or not isinstance(outage, int | float) or not (
            outage > 0 and math.isfinite(outage)
        ):
            raise self.fail("outage_window", f"got {outage!r}; valid: seconds > 0")
        storage = self.storage(data.get("storage"), name)
        artifact_dir = data.get("artifact_dir")
        if artifact_dir is None:
            artifact_dir = self.data_dir / "artifacts" / name
        elif isinstance(artifact_dir, str) and artifact_dir:
            artifact_dir = Path(artifact_dir).expanduser()
            if not artifact_dir.is_absolute():
                artifact_dir = self.data_dir / artifact_dir
        else:
            raise self.fail("artifact_dir", f"got {artifact_dir!r}; valid: a path or null")

        budget = []
        if total_timesteps is not None:
            budget.append(f"ppo.total_timesteps={total_timesteps}")
        if val_every is not None:
            budget.append(f"trainer.val_every_n_iterations={val_every}")
        base_config = self.base_config(data, budget)
        space_name, space = self.space(data.get("search_space"), base_config)
        try:
            check_unshaped_objective(objective, space.paths)
        except ValueError as error:
            raise self.fail("objective.metrics", str(error)) from None
        if sampler.name == "grid":  # its grid, and no more trials than it has points
            try:
                size = math.prod(len(v) for v in grid_of(space.distributions()).values())
            except StudyError as error:
                raise self.fail("sampler.name", str(error)) from None
            n_trials = size if n_trials is None else min(n_trials, size)
        budget_paths = [o.split("=")[0] for o in budget]
        clash = [p for p in space.paths if p in budget_paths]
        if clash:
            raise self.fail(
                "search_space", f"the space sets {clash[0]}, which the study's budget fixes; "
                "valid: drop it from the space or from budget"
            )
        return StudyConfig(
            name=name,
            path=self.path,
            base_config=base_config,
            space=space,
            directions=directions,
            metrics=list(objective.metrics),
            reduce=objective.reduce,
            folds=objective.folds,
            embargo_bars=objective.embargo_bars,
            sampler=sampler,
            pruner=pruner,
            total_timesteps=total_timesteps,
            val_every_n_iterations=val_every,
            n_trials=n_trials,
            timeout=float(timeout) if timeout is not None else None,
            seeds_per_trial=seeds,
            storage=storage,
            artifact_dir=artifact_dir,
            max_failure_rate=float(rate),
            heartbeat_interval=heartbeat,
            grace_period=grace,
            max_retry=max_retry,
            outage_window=float(outage),
            search_space=space_name,
            description=description,
        )

    def directions(self, data: Mapping[str, Any]) -> list[str]:
        if "direction" in data and "directions" in data:
            raise self.fail("directions", "give direction or directions, not both")
        if "directions" in data:
            raw = data["directions"]
            key = "directions"
            if not isinstance(raw, list) or not raw:
                raise self.fail(key, f"expected a non-empty list, got {raw!r}; valid: "
                                f"a list of {'/'.join(DIRECTIONS)}")
        else:
            raw, key = [data.get("direction", "maximize")], "direction"
        for i, value in enumerate(raw):
            if value not in DIRECTIONS:
                where = key if key == "direction" else f"{key}[{i}]"
                raise self.fail(where, f"got {value!r}; valid: {', '.join(DIRECTIONS)}")
        return list(raw)

    def objective(self, raw: Any, directions: list[str]) -> ObjectiveSpec:
        raw = {} if raw is None else raw
        n_directions = len(directions)
        if not isinstance(raw, Mapping):
            raise self.fail("objective", f"expected a mapping, got {raw!r}")
        keys = ("metrics", "reduce", "folds", "embargo_bars")
        unknown = [k for k in raw if k not in keys]
        if unknown:
            raise self.fail(f"objective.{unknown[0]}", f"unknown key; valid: {', '.join(keys)}")
        if "metrics" not in raw and n_directions > 1:
            raise self.fail(
                "objective.metrics", f"missing for {n_directions} directions; valid: one metric "
                "per direction, e.g. [val/total_return, val/max_drawdown]"
            )
        metrics = raw.get("metrics", ["val/episode_reward"])
        if isinstance(metrics, str):
            metrics = [metrics]
        if not isinstance(metrics, list) or not all(isinstance(m, str) and m for m in metrics):
            raise self.fail("objective.metrics", f"got {metrics!r}; valid: a list of metric "
                            "names such as val/episode_reward")
        if len(metrics) != n_directions:
            raise self.fail(
                "objective.metrics", f"{len(metrics)} metric(s) for {n_directions} "
                "direction(s); valid: one metric per direction"
            )
        try:
            return ObjectiveSpec(
                metrics=tuple(metrics),
                directions=tuple(directions),
                reduce=raw.get("reduce", "last"),
                folds=raw.get("folds", 1),
                embargo_bars=raw.get("embargo_bars", 0),
            )
        except ValueError as error:
            raise StudyError(f"{self.path}: {error}") from None

    def section(self, raw: Any, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        raw = {} if raw is None else raw
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, Mapping):
            raise self.fail(key, f"expected a mapping, got {raw!r}")
        unknown = [k for k in raw if k not in allowed]
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", f"unknown key; valid: {', '.join(allowed)}")
        if raw.get("options") is not None and not isinstance(raw.get("options"), Mapping):
            raise self.fail(f"{key}.options", f"expected a mapping, got {raw['options']!r}")
        return raw

    def sampler(self, raw: Any) -> SamplerConfig:
        raw = self.section(raw, "sampler", ("name", "seed", "options"))
        seed = raw.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise self.fail("sampler.seed", f"got {seed!r}; valid: an integer or null")
        return SamplerConfig(raw.get("name", "tpe"), seed, dict(raw.get("options") or {}))

    def pruner(self, raw: Any) -> PrunerConfig:
        raw = self.section(raw, "pruner", ("name", "options"))
        return PrunerConfig(raw.get("name", "median"), dict(raw.get("options") or {}))

    def budget(self, raw: Any) -> tuple[int | None, int | None]:
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise self.fail("budget", f"expected a mapping, got {raw!r}")
        allowed = ("total_timesteps", "val_every_n_iterations")
        unknown = [k for k in raw if k not in allowed]
        if unknown:
            raise self.fail(f"budget.{unknown[0]}", f"unknown key; valid: {', '.join(allowed)}")
        values = []
        for key in allowed:
            value = raw.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise self.fail(f"budget.{key}", f"got {value!r}; valid: an integer >= 1 or null")
            values.append(value)
        return values[0], values[1]

    def storage(self, raw: Any, name: str) -> str:
        if raw is None:
            return f"sqlite:///{self.data_dir / f'{name}.db'}"
        if not isinstance(raw, str) or not raw:
            raise self.fail("storage", f"got {raw!r}; valid: a storage URL or null")
        try:
            normalize_storage_url(raw)
        except StorageError as error:
            raise self.fail("storage", str(error)) from None
        return raw

    def base_config(self, data: Mapping[str, Any], budget: list[str]) -> TrainConfig:
        overrides = data.get("overrides") or []
        if not isinstance(overrides, list) or not all(
            isinstance(o, str) and "=" in o for o in overrides
        ):
            raise self.fail("overrides", f"got {overrides!r}; valid: a list of key=value strings")
        if "base_config" in data and "base" in data:
            raise self.fail("base", "give base_config (a file) or base (a mapping), not both")
        try:
            if data.get("base_config") is not None:
                file = data["base_config"]
                if not isinstance(file, str):
                    raise self.fail("base_config", f"got {file!r}; valid: a path to a YAML file")
                path = Path(file).expanduser()
                path = path if path.is_absolute() else self.dir / path
                return load_train_config(path, [*overrides, *budget])
            base = data.get("base") or {}
            if not isinstance(base, Mapping):
                raise self.fail("base", f"expected a mapping of TrainConfig values, got {base!r}")
            return build_train_config(dict(base), [*overrides, *budget])
        except ConfigError as error:
            key = "base_config" if data.get("base_config") is not None else "base"
            raise self.fail(key, str(error)) from None

    def space(self, raw: Any, base: TrainConfig) -> tuple[str, SearchSpace]:
        try:
            if isinstance(raw, Mapping):
                label = "<inline>"
                space = SearchSpace.from_dict(raw, source=f"{self.path}: search_space")
            elif isinstance(raw, str) and raw:
                label = raw
                path = find_named_file(
                    raw,
                    "search_spaces",
                    SpaceError,
                    kind="search space",
                    relative_to=self.dir,
                    extra_dirs=(self.dir.parent / "search_spaces",),
                )
                space = load_search_space(path)
            else:
                raise self.fail("search_space", f"got {raw!r}; valid: a name, a path or a mapping")
            space.check(base)
        except SpaceError as error:
            raise self.fail("search_space", str(error)) from None
        return label, space.with_base(base)
