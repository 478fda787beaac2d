"""The ``fxai_optuna`` sweep: override grammar -> Optuna distributions, ask/launch/tell, results.

Grammar (``hydra.sweeper.params`` and sweep overrides on the command line), on Optuna 5
distributions:

==============================  ==============================================================
``choice(a, b, c)``             ``CategoricalDistribution([a, b, c])`` (lists and dicts become
                                their override text, e.g. ``"{1h:32,4h:8}"``)
``range(a, b[, step])``         ``IntDistribution(a, last, step)``, or ``FloatDistribution``
                                when any bound or the step is a float; as in hydra-optuna-sweeper
                                (configs migrate from it) the stop is included: ``last`` is the
                                last point of the step grid from ``a`` not beyond ``b``
``shuffle(range(...))``         categorical over Hydra's range (stop excluded, as there)
``interval(a, b)``              ``FloatDistribution(a, b)`` (Hydra parses interval bounds as
                                floats)
``int(interval(a, b))``         ``IntDistribution(a, b)``
``tag(log, interval(a, b))``    ``FloatDistribution(a, b, log=True)``; with ``int(...)`` inside,
                                ``IntDistribution(a, b, log=True)``
a fixed value, ``~key``, ``+key=v`` passed to every job unchanged, never sampled
==============================  ==============================================================

Later overrides of a key replace earlier ones: command-line arguments win over ``params``.
A sampled string reaches its job quoted when Hydra would read it otherwise (``'a,b'``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages._heartbeat import get_heartbeat_thread  # what study.optimize beats with
from optuna.trial import TrialState

from hydra_plugins.fxai_optuna_sweeper._registry import (
    publish_in_memory_study,
    withdraw_in_memory_study,
)

__all__ = [
    "SweepSpace",
    "SweeperImpl",
    "distribution_from_override",
    "distributions_from_legacy",
    "format_value",
    "motpe_removed",
    "parse_sweep_space",
]

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
_SCALARS = (str, int, float, bool)


def motpe_removed(*args: Any, **kwargs: Any) -> NoReturn:
    """Target of ``hydra/sweeper/sampler=motpe``: MOTPESampler is gone since Optuna 4."""
    raise ValueError(
        "hydra/sweeper/sampler=motpe: MOTPESampler was removed in Optuna 4.0; valid: "
        "hydra/sweeper/sampler=tpe (TPESampler handles several objectives) or nsgaii"
    )


# -- grammar -------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A value as override text: ``true``, ``null``, ``1e-05``, ``[1,2]``, ``{a:1}``.

    Top-level strings are given as they are (``params`` values are grammar text such as
    ``choice(a, b)``); strings inside lists and dicts are quoted. A sampled value becomes
    override text through `SweepSpace.overrides`, which quotes strings that need it.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_format_item(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ",".join(_format_item(v) for v in value) + "]"
    return str(value)


def _format_item(value: Any) -> str:
    return _quoted(value) if isinstance(value, str) else format_value(value)


def _quoted(text: str) -> str:
    """``text`` as a quoted override string: ``\'`` is a quote, and backslashes before a quote
    (or the closing one) are doubled; Hydra keeps other backslashes as they are."""
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + escaped.replace("'", "\\'") + "'"


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def quote_if_needed(text: str) -> str:
    """``text`` as override text that Hydra reads back as this string: bare when it does
    (``adam``), else quoted (``'a,b'``, ``'it\\'s'``, ``'k=v'``, ``'null'``, ``'1'``)."""
    try:
        parsed = _parser().parse_override(f"key={text}")
        if not parsed.is_sweep_override() and parsed.value() == text:
            return text
    except HydraException:
        pass
    return _quoted(text)


def _range_distribution(override: Override, sweep: RangeSweep) -> BaseDistribution:
    """hydra-optuna-sweeper's ``range``: the stop is included when it is on the step grid."""
    if sweep.shuffle:  # hydra-optuna-sweeper: categorical over Hydra's own range (stop excluded)
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if not values:
            raise ValueError(
                f"{override.input_line}: shuffle(range({sweep.start}, {sweep.stop}, "
                f"{sweep.step})) is empty; valid: a stop beyond the start in the step's direction"
            )
        return CategoricalDistribution(values)
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if start is None or stop is None or not step or (stop - start) * step < 0:
        raise ValueError(
            f"{override.input_line}: range({start}, {stop}, {step}) is empty; valid: a stop "
            "at or beyond the start in the step's direction (the stop is included)"
        )
    floats = any(isinstance(x, float) for x in (start, stop, step))
    # exact decimal arithmetic so that (high - low) is a multiple of step for Optuna; the
    # grid starts at ``start`` and ends at the last point not beyond ``stop``
    exact = Decimal if floats else int
    first, size = exact(str(start)), abs(exact(str(step)))
    count = int(abs(exact(str(stop)) - first) // size)
    last = first + count * size if step > 0 else first - count * size
    low, high = min(first, last), max(first, last)
    if floats:
        return FloatDistribution(float(low), float(high), step=float(size))
    return IntDistribution(int(low), int(high), step=int(size))


def _interval_distribution(override: Override, sweep: IntervalSweep) -> BaseDistribution:
    log_scale = "log" in sweep.tags
    start, end = sweep.start, sweep.end
    if start is None or end is None or start > end:
        raise ValueError(
            f"{override.input_line}: interval needs start <= end, got {start=}, {end=}"
        )
    if log_scale and start <= 0:
        raise ValueError(
            f"{override.input_line}: tag(log, ...) needs a start > 0, got start={start}"
        )
    if isinstance(start, int) and isinstance(end, int):  # int(interval(a, b))
        return IntDistribution(start, end, log=log_scale)
    return FloatDistribution(float(start), float(end), log=log_scale)


def distribution_from_override(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override; None for a fixed value or a deletion.

    Raises:
        ValueError: For a form Optuna cannot sample (``tag(log, choice(...))``, an empty
            range, an interval with start > end or a log interval from <= 0).
    """
    if not override.is_sweep_override():
        return None
    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        if "log" in sweep.tags:
            raise ValueError(
                f"{override.input_line}: tag(log, ...) applies to interval(...) only; valid: "
                "tag(log, interval(a, b)) or tag(log, int(interval(a, b)))"
            )
        # lists and dicts become their override text (Optuna's choices are scalars)
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)
    if isinstance(sweep, RangeSweep):
        return _range_distribution(override, sweep)
    if isinstance(sweep, IntervalSweep):
        return _interval_distribution(override, sweep)
    raise ValueError(
        f"{override.input_line}: unsupported sweep; valid: choice(...), range(a, b[, step]), "
        "interval(a, b), int(interval(a, b)), tag(log, interval(a, b))"
    )


@dataclass
class SweepSpace:
    """What the sweeper samples (by Optuna name) and what it passes to every job unchanged."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    """Optuna parameter name (the override's key, ``+`` prefix kept) -> distribution."""
    fixed: dict[str, str] = field(default_factory=dict)
    """Override key -> full override text (``key=value``, ``~key``) given to every job."""
    verbatim: dict[str, set[str]] = field(default_factory=dict)
    """Optuna parameter name -> its choices that are the override text of a list or dict
    (``[1,2]``, ``{1h:32}``): passed as they are, where other strings are quoted."""

    def override_text(self, name: str, value: Any) -> str:
        """``value`` of parameter ``name`` as override text that Hydra reads back as it."""
        if isinstance(value, str):
            return value if value in self.verbatim.get(name, ()) else quote_if_needed(value)
        return format_value(value)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Job overrides for sampled ``params``, fixed values after them."""
        sampled = [f"{name}={self.override_text(name, value)}" for name, value in params.items()]
        return sampled + list(self.fixed.values())


def _identity(override: Override) -> tuple[str, str | None]:
    return override.key_or_group, override.package


def parse_sweep_space(arguments: Sequence[str]) -> SweepSpace:
    """Split override strings into sampled distributions and fixed overrides.

    Example:
        >>> space = parse_sweep_space(["x=interval(0, 4)", "y=3", "x=tag(log, interval(1, 2))"])
        >>> space.distributions["x"]
        FloatDistribution(high=2.0, log=True, low=1.0, step=None)
        >>> space.fixed
        {'y': 'y=3'}
    """
    parser = OverridesParser.create()
    entries: dict[tuple[str, str | None], tuple[Override, BaseDistribution | None]] = {}
    for override in parser.parse_overrides(list(arguments)):
        entries.pop(_identity(override), None)  # later wins, and moves to the end
        entries[_identity(override)] = (override, distribution_from_override(override))
    space = SweepSpace()
    for override, distribution in entries.values():
        name = override.get_key_element()
        if distribution is not None:
            space.distributions[name] = distribution
            if isinstance(distribution, CategoricalDistribution) and override.is_choice_sweep():
                structured = {Transformer.str(value) for value in override.sweep_iterator()
                              if not isinstance(value, _SCALARS)}
                if structured:
                    space.verbatim[name] = structured
        elif override.is_delete() and override.value() is None:
            space.fixed[name] = name
        else:
            space.fixed[name] = f"{name}={override.get_value_element_as_str()}"
    return space


def distributions_from_legacy(search_space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """hydra-optuna-sweeper's deprecated ``search_space`` mapping as Optuna distributions.

    Each entry is ``{type: int|float|categorical, low, high, log, step, choices}``.
    """
    result: dict[str, BaseDistribution] = {}
    for name, spec in search_space.items():
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(
                f"hydra.sweeper.search_space.{name}: expected {{type: int|float|categorical, "
                f"low, high, log, step, choices}}, got {spec!r}"
            )
        kind = str(spec["type"]).rsplit(".", 1)[-1]
        log_scale = bool(spec.get("log", False))
        step = spec.get("step")
        if kind == "categorical":
            choices = spec.get("choices")
            if not choices:
                raise ValueError(f"hydra.sweeper.search_space.{name}: categorical needs choices")
            result[str(name)] = CategoricalDistribution(list(choices))
        elif kind == "int":
            result[str(name)] = IntDistribution(
                int(spec["low"]), int(spec["high"]), log=log_scale,
                step=int(step) if step is not None else 1,
            )
        elif kind == "float":
            result[str(name)] = FloatDistribution(
                float(spec["low"]), float(spec["high"]), log=log_scale,
                step=float(step) if step is not None else None,
            )
        else:
            raise ValueError(
                f"hydra.sweeper.search_space.{name}.type: unknown type {spec['type']!r}; "
                "valid: int, float, categorical"
            )
    return result


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """``trial.suggest_*`` for one distribution."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step,
            log=distribution.log,
        )
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step,
            log=distribution.log,
        )
    raise TypeError(f"{name}: unsupported distribution {distribution!r}")


# -- the sweep -----------------------------------------------------------------------------------


def seeded_per_trial(
    sampler: optuna.samplers.BaseSampler, raw: Any
) -> optuna.samplers.BaseSampler:
    """A seeded sampler drawing trial N from ``(seed, N)``, as the CLI's: sweeps sharing a
    study, or continuing one, never replay its trials (issue 12). The grid sampler (which
    skips visited points) and QMC (one scrambled sequence for all) keep their seed.

    Args:
        sampler: The sampler built from ``raw``.
        raw: Its config (``hydra.sweeper.sampler``, a DictConfig with ``_target_``).
    """
    from fxai_tune.tune import TrialSeededSampler

    seed = raw.get("seed") if isinstance(raw, DictConfig) else None
    if seed is None or isinstance(
        sampler, optuna.samplers.GridSampler | optuna.samplers.QMCSampler
    ):
        return sampler
    config = OmegaConf.to_container(raw, resolve=True)

    def build(trial_seed: int) -> optuna.samplers.BaseSampler:
        return instantiate({**config, "seed": trial_seed})

    return TrialSeededSampler(build, int(seed))


def build_sampler(raw: Any) -> optuna.samplers.BaseSampler | None:
    """The sampler a job re-attached in another process samples ``search_space: NAME`` with:
    the sweep's, built from its config the same way (`seeded_per_trial`)."""
    if not isinstance(raw, DictConfig):
        return None
    sampler = instantiate(raw)
    if not isinstance(sampler, optuna.samplers.BaseSampler):  # the grid sampler's partial
        return None
    return seeded_per_trial(sampler, raw)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _mask(url: str) -> str:
    from fxai_tune.tune import mask_password

    return mask_password(url)


_STORAGE_OVERRIDE = re.compile(r"^([+~]*hydra\.sweeper\.storage)=.*", re.DOTALL)


def _storage_by_reference(config: DictConfig) -> None:
    """Make every job config name the storage as ``${oc.env:FXAI_TUNE_STORAGE}``, not the URL.

    Hydra writes each job's ``.hydra/hydra.yaml`` unresolved, with the sweep's overrides, and
    rebuilds the job config from those overrides: a URL with a password put there would be
    written once per job. The URL goes into the environment of this process (which launchers
    pass on to their jobs) and the config keeps the reference (issue 12). A storage given as
    an interpolation already (the documented ``${oc.env:FXAI_TUNE_STORAGE}``) is left alone.
    """
    from fxai_tune import STORAGE_ENV
    from fxai_tune.tune import mask_password

    sweeper = config.hydra.sweeper
    if OmegaConf.is_interpolation(sweeper, "storage"):
        return
    url = sweeper.get("storage")
    if not isinstance(url, str) or mask_password(url) == url:
        return  # no password: nothing to hide
    os.environ[STORAGE_ENV] = url
    reference = f"${{oc.env:{STORAGE_ENV}}}"
    overrides = [str(o) for o in config.hydra.overrides.hydra]
    replaced = [_STORAGE_OVERRIDE.sub(rf"\1={reference}", o, count=1) for o in overrides]
    if replaced == overrides:  # set in a config file: override it for the jobs
        replaced.append(f"hydra.sweeper.storage={reference}")
    with read_write(config), open_dict(config):
        sweeper.storage = reference
        config.hydra.overrides.hydra = replaced


class SweepStopped(RuntimeError):
    """The sweep stopped because too many of its jobs failed."""


@dataclass
class _Outcome:
    state: TrialState
    failure: BaseException | None = None


class SweeperImpl:
    """The state and loop of one ``fxai_optuna`` sweep process; see the module docstring."""

    def __init__(
        self,
        *,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: Any,
        params: Any,
        custom_search_space: str | None,
        pruner: Any,
        heartbeat_interval: int | None = 10,
        grace_period: int | None = 30,
        max_retry: int | None = 3,
    ) -> None:
        if not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"hydra.sweeper.n_trials must be an int >= 1, got {n_trials=}")
        if not isinstance(n_jobs, int) or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_jobs must be an int >= 1, got {n_jobs=}")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ValueError(
                f"hydra.sweeper.max_failure_rate must be in [0, 1], got {max_failure_rate=}"
            )
        if study_name is not None:  # the CLI's rule: names become folders and file names
            from fxai_tune.tune import check_study_name

            try:
                check_study_name(study_name)
            except ValueError as error:
                raise ValueError(f"hydra.sweeper.study_name: {error}") from None
        self.sampler_config = sampler
        self.direction = direction
        self.directions = self._directions(direction) if direction is not None else []
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.storage_url = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = float(max_failure_rate)
        self.search_space = search_space
        self.params = params
        self.custom_search_space: Callable[[DictConfig, optuna.Trial], None] | None = (
            get_method(custom_search_space) if custom_search_space else None
        )
        self.pruner_config = pruner
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.preflight: Callable[[DictConfig], None] | None = None
        self.provenance_of: Callable[[DictConfig], dict[str, Any]] | None = None
        self.job_config: DictConfig | None = None
        self.launcher: Any = None
        self.in_process = False
        self.sweep_dir = Path(".")

    @staticmethod
    def _directions(direction: Any) -> list[str]:
        raw = list(direction) if isinstance(direction, (MutableSequence, ListConfig)) else [
            direction
        ]
        from fxai_tune.tune._scoring import DIRECTIONS  # the CLI's, one list for both

        names = [getattr(d, "name", d) for d in raw]  # hydra-optuna's Direction enum too
        if not names or any(d not in DIRECTIONS for d in names):
            raise ValueError(
                f"hydra.sweeper.direction must be one of {list(DIRECTIONS)} or a list of them, "
                f"got {direction!r}"
            )
        return [str(d) for d in names]

    def _resolve_directions(self) -> list[str]:
        """``hydra.sweeper.direction`` when given, else the app's ``objective.directions`` (so
        a sweep of ``fxai_tune.train`` maximizes what the task maximizes), else ``minimize``
        (hydra-optuna-sweeper's default, for apps without an ``objective`` block)."""
        if self.direction is not None:
            return self._directions(self.direction)
        app = OmegaConf.select(self.config, "objective.directions", default=None)
        if app is None:
            return ["minimize"]
        directions = self._directions(app)
        log.info("hydra.sweeper.direction not given: %s, from objective.directions", directions)
        return directions

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        self.config = config
        _storage_by_reference(config)
        self.hydra_context = hydra_context
        # the task's pre-flight (fxai_tune.train's is `fxai_tune.hydra_app.preflight_sweep`)
        self.preflight = getattr(task_function, "fxai_preflight", None)
        # what a created study records of its jobs' packages, commit and data files
        self.provenance_of = getattr(task_function, "fxai_provenance", None)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.in_process = isinstance(self.launcher, BasicLauncher)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # -- set-up of one sweep ---------------------------------------------------------------------

    def _space(self, arguments: list[str]) -> SweepSpace:
        params = self.params or {}
        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params, resolve=True)
        if not isinstance(params, Mapping):
            raise TypeError(
                f"hydra.sweeper.params must be a mapping key -> grammar, got {params!r}"
            )
        lines = [f"{key}={format_value(value)}" for key, value in params.items()]
        space = parse_sweep_space([*lines, *arguments])
        legacy = self.search_space
        if isinstance(legacy, DictConfig):
            legacy = OmegaConf.to_container(legacy, resolve=True)
        if isinstance(legacy, Mapping) and legacy:
            if self.params:
                log.warning("hydra.sweeper.search_space is ignored: hydra.sweeper.params is set")
            else:
                log.warning(
                    "hydra.sweeper.search_space as a mapping is hydra-optuna-sweeper's deprecated "
                    "form; prefer hydra.sweeper.params (override grammar)"
                )
                legacy_space = distributions_from_legacy(legacy)
                space.distributions = {**legacy_space, **space.distributions}
        for name in space.fixed:
            space.distributions.pop(name, None)
        return space

    def _job_search_space(self, space: SweepSpace) -> Any:
        if not isinstance(self.search_space, str):
            return None
        from fxai_tune.tune import load_search_space

        loaded = load_search_space(self.search_space)
        clash = sorted(set(loaded.distributions()) & set(space.distributions))
        if clash:
            raise ValueError(
                f"{clash} are sampled by both hydra.sweeper.params and search_space "
                f"{self.search_space!r}; valid: each parameter in one of them"
            )
        return loaded

    def _check_objective(self, space: SweepSpace, job_space: Any) -> None:
        """Refuse, before any trial, a sweep whose objective is the reward it tunes (the
        same rule as a study file's: `fxai_tune.tune.check_unshaped_objective`)."""
        from fxai_tune.tune import ObjectiveSpec, check_unshaped_objective

        raw = self.config.get("objective") if self.config is not None else None
        metrics = list(raw.get("metrics", ["val/episode_reward"])) if raw else [
            "val/episode_reward"]
        tuned = [name.lstrip("+") for name in space.distributions]
        if job_space is not None:
            tuned += list(job_space.paths)
        try:
            check_unshaped_objective(
                ObjectiveSpec(metrics=tuple(metrics), directions=("maximize",) * len(metrics)),
                tuned,
            )
        except ValueError as error:
            # bad input: one line and exit code 2, as the CLI does, not Hydra's traceback
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    def _check_strategy(self, space: SweepSpace) -> None:
        """Refuse, before any trial, a ``trainer.strategy`` whose extra ranks would re-run the
        sweep (``ddp``): the same rule as ``fxai-tune run``'s (`check_trial_strategy`)."""
        from fxai_tune.tune import check_trial_strategy

        fixed = space.fixed.get("trainer.strategy")  # "trainer.strategy=VALUE"
        if fixed is not None:
            strategy = fixed.split("=", 1)[-1]
        else:
            strategy = OmegaConf.select(self.config, "trainer.strategy", default="auto")
        try:
            check_trial_strategy(str(strategy))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    def _run_preflight(self, space: SweepSpace) -> None:
        """The task's ``fxai_preflight(cfg)`` on the config of its jobs before sampling (the
        fixed overrides applied), before the study is opened: a config that every job would
        fail on is one line and exit code 2, and the storage stays unchanged."""
        if self.hydra_context is None or (self.preflight is None and self.provenance_of is None):
            return
        try:
            job = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(space.fixed.values())
            )
            with open_dict(job):
                del job["hydra"]  # what the task gets (Hydra's run_job does the same)
            self.job_config = job
            if self.preflight is not None:
                self.preflight(job)
        except (ValueError, HydraException) as error:
            text = str(error).strip().splitlines()
            print(f"error: {text[0] if text else type(error).__name__}", file=sys.stderr)
            raise SystemExit(2) from None

    def _make_sampler(self, space: SweepSpace) -> optuna.samplers.BaseSampler:
        # Hydra instantiates the sweeper recursively: ``sampler`` arrives built (a partial for
        # the grid sampler, which needs the grid); a DictConfig only with ``_recursive_: false``
        sampler = self.sampler_config
        if sampler is None:
            sampler = optuna.samplers.TPESampler()
        elif isinstance(sampler, DictConfig):
            log.info("Instantiating sampler <%s>", sampler.get("_target_"))
            sampler = instantiate(sampler)
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            from fxai_tune.tune._study import GRID_ERROR, grid_of  # the CLI's grid

            if self.custom_search_space is not None or isinstance(self.search_space, str):
                raise ValueError(f"{GRID_ERROR}; custom_search_space and search_space: NAME "
                                 "cannot be used with it")
            grid = grid_of(space.distributions)
            size = math.prod(len(values) for values in grid.values())
            if size < self.n_trials:
                log.info("Grid of %d points: n_trials %d -> %d", size, self.n_trials, size)
                self.n_trials = size
            sampler = sampler(grid)
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            raise TypeError(
                "hydra.sweeper.sampler must build an optuna sampler, got "
                f"{type(sampler).__name__}; valid: hydra/sweeper/sampler=tpe|random|grid|cmaes|"
                "nsgaii|gp|qmc or a _target_ naming an optuna.samplers class"
            )
        return self._seeded_per_trial(sampler)

    def _seeded_per_trial(
        self, sampler: optuna.samplers.BaseSampler
    ) -> optuna.samplers.BaseSampler:
        raw = OmegaConf.select(self.config, "hydra.sweeper.sampler") if self.config else None
        return seeded_per_trial(sampler, raw)

    def _make_pruner(self) -> optuna.pruners.BasePruner | None:
        pruner = self.pruner_config
        if isinstance(pruner, DictConfig):
            log.info("Instantiating pruner <%s>", pruner.get("_target_"))
            pruner = instantiate(pruner)
        if pruner is not None and not isinstance(pruner, optuna.pruners.BasePruner):
            raise TypeError(
                f"hydra.sweeper.pruner must build an optuna pruner, got {type(pruner).__name__}"
            )
        return pruner

    def _record_provenance(self, study: optuna.Study) -> None:
        """A created study records the task's `fxai_provenance` of its jobs' config, as
        ``fxai-tune run`` records its study file's (packages, git commit, data hashes)."""
        if self.provenance_of is not None and self.job_config is not None:
            from fxai_tune.tune._provenance import PROVENANCE_ATTR

            study.set_user_attr(PROVENANCE_ATTR, self.provenance_of(self.job_config))

    def _open_study(self, space: SweepSpace) -> optuna.Study:
        """Create or load the study; with a storage, the way ``fxai-tune run`` does (under the
        study lock, with the workers' heartbeat and stale-trial retry)."""
        sampler, pruner = self._make_sampler(space), self._make_pruner()
        if self.storage_url:
            from fxai_tune.tune import create_or_load_study

            metrics = OmegaConf.select(self.config, "objective.metrics", default=None)
            study = create_or_load_study(
                str(self.storage_url),
                self.study_name,
                directions=self.directions,
                metrics=list(metrics) if metrics is not None else None,
                sampler=sampler,
                pruner=pruner,
                heartbeat_interval=self.heartbeat_interval,
                grace_period=self.grace_period,
                max_retry=self.max_retry,
                on_create=self._record_provenance,
            )
        else:
            study = optuna.create_study(
                study_name=self.study_name, sampler=sampler, pruner=pruner,
                directions=self.directions,
            )
        existing = [d.name.lower() for d in study.directions]
        if existing != self.directions:
            raise ValueError(
                f"study {study.study_name!r} exists with directions {existing}; "
                f"hydra.sweeper.direction is {self.directions}; valid: the study's directions "
                "or another study_name"
            )
        return study

    # -- the loop --------------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        """Run trials until the study holds ``n_trials`` or too many jobs failed."""
        if self.config is None:
            raise RuntimeError("SweeperImpl.setup() must run before sweep()")
        self._refuse_unreachable_study()
        self.directions = self._resolve_directions()
        space = self._space(arguments)
        job_space = self._job_search_space(space)
        self._check_objective(space, job_space)
        self._check_strategy(space)
        self._run_preflight(space)
        study = self._open_study(space)
        log.info("Study name: %s", study.study_name)
        log.info("Storage: %s", _mask(self.storage_url) if self.storage_url else "in memory")
        log.info("Sampler: %s, pruner: %s", study.sampler,
                 type(study.pruner).__name__)
        log.info("Directions: %s; trial cap of the study: %d", self.directions, self.n_trials)
        if self.storage_url is None:
            publish_in_memory_study(study)  # its jobs run here: they find it by name
        try:
            self._loop(study, space)
        finally:
            if self.storage_url is None:
                withdraw_in_memory_study(study)

    def _refuse_unreachable_study(self) -> None:
        """A job re-attaches to its trial through the storage; one in memory is reachable
        only from jobs in this process."""
        if self.storage_url is None and not self.in_process:
            print(
                f"error: hydra.sweeper.storage=null keeps the study in this process, but "
                f"launcher {type(self.launcher).__name__} runs jobs in others, which could not "
                "reach their trial (no pruning, no user attributes); valid: "
                "hydra.sweeper.storage=sqlite:///FILE.db (or another URL), or "
                "hydra/launcher=basic",
                file=sys.stderr,
            )
            raise SystemExit(2)

    def _loop(self, study: optuna.Study, space: SweepSpace) -> None:
        finished = failed = 0
        while True:
            trials = self._ask(study)
            if not trials:
                break
            outcomes = self._run_batch(study, trials, space)
            finished += len(outcomes)
            failures = [o.failure for o in outcomes if o.state == TrialState.FAIL]
            failed += len(failures)
            if failures and failed / finished > self.max_failure_rate:
                self._write_results(study)
                log.error(
                    "Sweep stopped: %d of %d finished jobs failed (%.0f%% > max_failure_rate "
                    "%s)", failed, finished, 100 * failed / finished, self.max_failure_rate,
                )
                error = failures[-1]
                if error is not None:
                    raise error
                raise SweepStopped(f"{failed} of {finished} jobs failed")
        self._write_results(study)

    def _ask(self, study: optuna.Study) -> list[optuna.Trial]:
        """Up to ``n_jobs`` new trials, never past the study-wide cap (checked under a lock)."""
        from contextlib import nullcontext

        from fxai_tune.tune import fail_stale_trials, study_lock

        shared = bool(self.storage_url)
        lock: Any = (
            study_lock(str(self.storage_url), self.study_name or "") if shared else nullcontext()
        )
        trials: list[optuna.Trial] = []
        with lock:
            # as a worker does: a trial whose sweep or worker died (no heartbeat for
            # grace_period) is failed and its retry queued, before the cap is checked
            for number in fail_stale_trials(study):
                log.warning("Trial %d: its process stopped beating; failed and retried", number)
            for _ in range(self.n_jobs):
                counted, waiting = _count(study, shared=shared)
                if waiting == 0 and counted >= self.n_trials:
                    break
                with warnings.catch_warnings():
                    # the sweep beats for its trials itself (see _run_batch)
                    warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                    trials.append(study.ask())
        return trials

    def _configure(
        self, trial: optuna.Trial, space: SweepSpace
    ) -> list[str]:
        params = {name: suggest(trial, name, dist) for name, dist in space.distributions.items()}
        if self.custom_search_space is not None:
            self.custom_search_space(self.config, trial)  # type: ignore[arg-type]
            params = {**params, **{k: v for k, v in trial.params.items() if k not in params}}
        clash = sorted(set(params) & set(space.fixed))
        if clash:
            raise ValueError(f"{clash} are both fixed and sampled; valid: one of the two")
        if space.fixed:
            trial.set_user_attr("fixed_params", dict(space.fixed))
        overrides = space.overrides(params)
        trial.set_user_attr("overrides", overrides)
        return overrides

    def _run_batch(
        self,
        study: optuna.Study,
        trials: list[optuna.Trial],
        space: SweepSpace,
    ) -> list[_Outcome]:
        trials = sorted(trials, key=lambda t: t.number)
        outcomes: dict[int, _Outcome] = {}
        heartbeats = contextlib.ExitStack()
        try:
            overrides: list[list[str]] = []
            # a job finds its trial by storage, study name and number (`attach_trial`)
            named = [] if self.study_name else [f"hydra.sweeper.study_name={study.study_name}"]
            for trial in trials:
                overrides.append(self._configure(trial, space) + named)
            # each trial beats while its job runs, as under study.optimize: if this process
            # dies, the next sweep or worker fails the trial and re-runs its parameters
            for trial in trials:
                heartbeats.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
            # job number = trial number: unique across sweep processes sharing the study
            for start, stop in _consecutive_runs([t.number for t in trials]):
                batch = [(t, o) for t, o in zip(trials, overrides, strict=True)
                         if start <= t.number < stop]
                returns = self.launcher.launch([o for _, o in batch], initial_job_idx=start)
                for (trial, _), ret in zip(batch, returns, strict=True):
                    outcomes[trial.number] = self._tell(study, trial, ret)
        except BaseException as error:
            for trial in trials:
                if trial.number not in outcomes:
                    self._finish(study, trial, TrialState.FAIL, None,
                                 f"sweep interrupted: {_first_line(error)}")
            raise
        finally:
            heartbeats.close()
        return [outcomes[t.number] for t in trials]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> _Outcome:
        if ret.status == JobStatus.COMPLETED:
            try:
                values = self._values(ret._return_value)
            except ValueError as error:
                self._finish(study, trial, TrialState.FAIL, None, str(error))
                log.warning("Trial %d failed: %s", trial.number, error)
                return _Outcome(TrialState.FAIL, error)
            self._finish(study, trial, TrialState.COMPLETE, values)
            return _Outcome(TrialState.COMPLETE)
        error = ret._return_value
        if isinstance(error, optuna.TrialPruned):
            self._finish(study, trial, TrialState.PRUNED, None)
            log.info("Trial %d pruned: %s", trial.number, error)
            return _Outcome(TrialState.PRUNED)
        reason = _first_line(error) if isinstance(error, BaseException) else str(error)
        self._finish(study, trial, TrialState.FAIL, None, reason)
        log.warning("Trial %d failed: %s", trial.number, reason,
                    exc_info=error if isinstance(error, BaseException) else None)
        return _Outcome(TrialState.FAIL, error if isinstance(error, BaseException) else None)

    def _values(self, value: Any) -> list[float]:
        """The job's return value as one float per direction."""
        if len(self.directions) == 1:
            raw = [value]
        elif isinstance(value, Sequence | ListConfig) and not isinstance(value, str):
            raw = list(value)
        else:
            raise ValueError(
                f"a task of a {len(self.directions)}-objective sweep must return a list of "
                f"{len(self.directions)} floats, got {value!r}"
            )
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError):
            raise ValueError(
                f"the task must return a float (or a list of floats, one per direction), "
                f"got {value!r}"
            ) from None
        if len(values) != len(self.directions):
            raise ValueError(
                f"the task returned {len(values)} values for {len(self.directions)} directions "
                f"{self.directions}"
            )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"the task returned a non-finite value: {values}")
        return values

    @staticmethod
    def _finish(
        study: optuna.Study,
        trial: optuna.Trial,
        state: TrialState,
        values: list[float] | None,
        reason: str | None = None,
    ) -> None:
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
        try:
            study.tell(trial, values=values, state=state)
        except RuntimeError as error:
            # GridSampler calls study.stop() once the grid is exhausted, which only works
            # inside study.optimize; the trial is stored before that error.
            if "Study.stop" not in str(error):
                raise

    # -- results ---------------------------------------------------------------------------------

    def _write_results(self, study: optuna.Study) -> Path:
        trials = study.get_trials(deepcopy=False)
        counts = {
            state.name.lower(): sum(t.state == state for t in trials)
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        results: dict[str, Any] = {"name": "optuna"}
        if len(self.directions) == 1:
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            best = study.best_trial if complete else None
            results["best_params"] = dict(best.params) if best else None
            results["best_value"] = best.value if best else None
            if best:
                log.info("Best parameters: %s", best.params)
                log.info("Best value: %s", best.value)
            else:
                log.warning("No trial completed: optimization_results.yaml has no best trial")
        else:
            pareto = study.best_trials
            results["solutions"] = [
                {"params": dict(t.params), "values": list(t.values)} for t in pareto
            ]
            log.info("Number of Pareto solutions: %d", len(pareto))
        results["study_name"] = study.study_name
        results["trials"] = counts
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        path = self.sweep_dir / RESULTS_FILE
        path.write_text(yaml.safe_dump(results, sort_keys=False))
        return path


def _count(study: optuna.Study, *, shared: bool) -> tuple[int, int]:
    """(trials toward the cap, waiting trials) of the study.

    A shared study is counted like `fxai_tune.tune.run_worker` does (a failed trial that a
    heartbeat retry replaced counts once); a private one by its trials.
    """
    trials = study.get_trials(deepcopy=False)
    if shared:
        from fxai_tune.tune import count_trials

        counts = count_trials(trials)
        return counts.counted, counts.waiting
    return len(trials), sum(t.state == TrialState.WAITING for t in trials)


def _consecutive_runs(numbers: list[int]) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive numbers, in order (a batch can hold retried trials)."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and runs[-1][1] == number:
            runs[-1] = (runs[-1][0], number + 1)
        else:
            runs.append((number, number + 1))
    return runs
