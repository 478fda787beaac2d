"""Search spaces: which `TrainConfig` values a trial samples, read from a declarative YAML file.

A search space file (``search_spaces/<name>.yaml``) has three sections, all optional::

    params:                     # dotted TrainConfig path -> distribution (YAML order kept)
      ppo.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      ppo.clip_coef: {type: float, low: 0.1, high: 0.3, step: 0.05}
      model.n_layers: {type: int, low: 1, high: 3}           # int: low, high, log, step
      ppo.n_steps: {type: categorical, choices: [64, 128, 256]}
      model.mlp_hidden: {type: categorical, choices: [[64, 64], [128, 128]]}
      use_target_kl: {type: categorical, choices: [true, false], virtual: true}
      ppo.target_kl: {type: float, low: 0.01, high: 0.05,
                      when: {use_target_kl: true}, otherwise: null}
    fixed:                      # dotted path -> value written into every trial's config
      ppo.n_epochs: 4
      env.windows: {1h: 32, 4h: 8}
    constraints:
      - {divides: ppo.batch_size, into: [ppo.n_envs, ppo.n_steps]}
      - {divides: model.n_heads, into: [model.d_model]}

Rules:

- **Paths** are checked against the live `TrainConfig` dataclasses (fields of nested dataclasses);
  below a dict-typed field any key is a path (``env.windows.1h``). A list- or dict-typed field
  takes a whole list/dict value, which replaces the base config's value.
- **Distributions** are Optuna's and are fixed per name: ``float`` (low, high, log, step),
  ``int`` (low, high, log, step) and ``categorical`` (choices). Choices that are lists or dicts
  are stored in Optuna as their JSON text (Optuna's choices must be scalars) and decoded on
  sampling. Every value must fit the field's type.
- **Virtual parameters** (``virtual: true``) are sampled and recorded by Optuna but never
  written into the config; their names must not be config paths. They exist to switch
  conditions (``use_target_kl`` above).
- **Conditions**: ``when: {other: value}`` samples the parameter only when ``other`` (a
  categorical or int parameter of this space) was sampled and equals ``value``; a list value
  means "any of these"; several keys must all hold. A parameter whose condition fails is not
  suggested to Optuna at all, so it is absent from ``trial.params``; the config then keeps the
  base config's value, or takes ``otherwise`` when given (``otherwise: null`` turns
  ``ppo.target_kl`` off). A parameter whose condition's parameter is itself inactive is
  inactive. Parameters are sampled in dependency order (conditions first), else in YAML order.
- **Constraints**: ``{divides: D, into: [A, B, ...]}`` makes the int value at path D divide the
  product of A, B, ... (values of this trial, else of the base config). After sampling, D is
  repaired to the largest divisor of the product that is <= its sampled value (so a batch larger
  than the rollout becomes the rollout). Optuna keeps the sampled value in ``trial.params`` (its
  distribution never changes); the repaired values are recorded in the trial's user attr
  ``repaired_params`` ({path: value}) and are what the config gets. Constraints apply in order.

Errors are `SpaceError` (a ValueError) with a one-line message ``FILE: KEY: problem; valid: ...``.

Example:
    >>> space = SearchSpace.from_dict(
    ...     {"params": {"ppo.gamma": {"type": "float", "low": 0.9, "high": 0.999}}})
    >>> import optuna
    >>> values = space.sample(optuna.trial.FixedTrial({"ppo.gamma": 0.95}))
    >>> space.apply(TrainConfig(), values).ppo.gamma
    0.95
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from fxai_tune.rl import TrainConfig, build_train_config, config_to_dict

__all__ = [
    "PACKAGE_DIR",
    "REPAIRED_ATTR",
    "Constraint",
    "Param",
    "SearchSpace",
    "SpaceError",
    "config_field_type",
    "load_search_space",
]

PARAM_TYPES = ("float", "int", "categorical")
CONSTRAINT_KINDS = ("divides",)
REPAIRED_ATTR = "repaired_params"
"""Trial user attr holding {path: value} of values changed by constraints."""

_SECTIONS = ("params", "fixed", "constraints")
_FIELDS = {
    "float": ("type", "low", "high", "log", "step", "when", "otherwise", "virtual"),
    "int": ("type", "low", "high", "log", "step", "when", "otherwise", "virtual"),
    "categorical": ("type", "choices", "when", "otherwise", "virtual"),
}
PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The installed ``fxai_tune`` package: its ``studies/`` and ``search_spaces/`` are shipped."""
_MISSING: Any = object()


class SpaceError(ValueError):
    """A search space that cannot be used; the message is one line naming file and key."""


# --------------------------------------------------------------------------------------------
# YAML and file lookup (shared with the study loader)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-5`` as a float (YAML 1.2) and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path, error: type[ValueError]) -> Any:
    """Parse a YAML file, turning any parse error into a one-line ``error``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); valid: a YAML text file"
        ) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: invalid YAML{where}: {problem}") from None


def find_named_file(
    name_or_path: str | os.PathLike[str],
    folder: str,
    error: type[ValueError],
    *,
    kind: str,
    relative_to: Path | None = None,
    extra_dirs: tuple[Path, ...] = (),
) -> Path:
    """Resolve a bare name to ``<folder>/<name>.yaml``, or check that a path exists.

    A bare name (no slash, no ``.yaml``/``.yml`` suffix) is looked up in ``./<folder>``, then in
    ``extra_dirs``, then in ``<folder>`` of the installed package (the shipped files). A
    relative path is taken relative to ``relative_to`` (when given) or the current directory.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if not text:
        raise error(f"empty {kind} name; give a name or a path to a .yaml file")
    if path.suffix in (".yaml", ".yml") or "/" in text or os.sep in text:
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        if not path.is_file():
            raise error(f"{path}: {kind} file does not exist")
        return path
    dirs = [Path.cwd() / folder, *extra_dirs, PACKAGE_DIR / folder]
    for directory in dirs:
        for suffix in (".yaml", ".yml"):
            if (directory / f"{text}{suffix}").is_file():
                return directory / f"{text}{suffix}"
    names = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.y*ml")})
    unique_dirs = list(dict.fromkeys(str(d) for d in dirs))
    raise error(f"{text}: no {kind} of that name in {unique_dirs}; valid: {names}")


# --------------------------------------------------------------------------------------------
# The TrainConfig structure


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_mapping_type(annotation: Any) -> bool:
    base = _strip_optional(annotation)
    return base is dict or typing.get_origin(base) in (dict, Mapping)


def config_field_type(path: str) -> Any:
    """Type annotation of the `TrainConfig` field at a dotted path; ``None`` if there is none.

    Below a dict-typed field any key is valid and has the dict's value type.

    Example:
        >>> config_field_type("env.windows.1h")
        <class 'int'>
    """
    annotation: Any = TrainConfig
    for part in path.split("."):
        base = _strip_optional(annotation)
        if not part:
            return None
        if dataclasses.is_dataclass(base):
            names = {f.name for f in dataclasses.fields(base)}
            if part not in names:
                return None
            annotation = _hints(base)[part]
        elif _is_mapping_type(base):
            args = typing.get_args(base)
            annotation = args[1] if len(args) == 2 else Any
        else:
            return None
    return annotation


@functools.cache
def _known_paths() -> tuple[str, ...]:
    """Every field path of the default `TrainConfig`, with the keys of its dict fields."""
    paths: list[str] = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            path = f"{prefix}{f.name}"
            paths.append(path)
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{path}.")
            elif isinstance(value, Mapping):
                paths.extend(f"{path}.{key}" for key in value)

    walk(TrainConfig(), "")
    return tuple(paths)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _fits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` (as read from YAML) can fill a field annotated ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, value) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(map(_fits, args, value))
        return not args or all(_fits(args[0], v) for v in value)
    if annotation is dict or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        return len(args) != 2 or all(_fits(args[1], v) for v in value.values())
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, Mapping)
    return True


# --------------------------------------------------------------------------------------------
# The space


@dataclasses.dataclass(frozen=True)
class Param:
    """One sampled parameter."""

    name: str
    """Dotted config path (or a free name when ``virtual``); also the Optuna parameter name."""
    distribution: BaseDistribution
    """Optuna distribution; the same for every trial."""
    when: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    """Condition: parameter name -> accepted values; all must hold."""
    otherwise: Any = _MISSING
    """Value written into the config when the condition fails; unset keeps the base value."""
    virtual: bool = False
    """Sampled and recorded but never written into the config."""
    encoded: bool = False
    """Categorical choices are JSON texts of lists/dicts, decoded when sampled."""

    @property
    def has_otherwise(self) -> bool:
        """Whether an ``otherwise`` value was given."""
        return self.otherwise is not _MISSING

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Ask ``trial`` for this parameter's value (Optuna 5 ``suggest_*`` APIs)."""
        dist = self.distribution
        if isinstance(dist, FloatDistribution):
            return trial.suggest_float(
                self.name, dist.low, dist.high, log=dist.log, step=dist.step
            )
        if isinstance(dist, IntDistribution):
            return trial.suggest_int(self.name, dist.low, dist.high, log=dist.log, step=dist.step)
        value = trial.suggest_categorical(self.name, dist.choices)  # type: ignore[attr-defined]
        return json.loads(value) if self.encoded else value

    def choices(self) -> list[Any]:
        """Decoded categorical choices (empty for numeric distributions)."""
        if not isinstance(self.distribution, CategoricalDistribution):
            return []
        raw = list(self.distribution.choices)
        return [json.loads(c) for c in raw] if self.encoded else raw


@dataclasses.dataclass(frozen=True)
class Constraint:
    """``divisor`` is repaired to divide the product of the ``into`` values."""

    divisor: str
    """Dotted path of the int value that must divide."""
    into: tuple[str, ...]
    """Dotted paths whose product it must divide."""


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps bools apart from ints (``True != 1`` here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _largest_divisor(n: int, limit: int) -> int:
    """Largest divisor of ``n`` that is <= ``limit`` (at least 1)."""
    best = 1
    for k in range(1, math.isqrt(n) + 1):
        if n % k == 0:
            for d in (k, n // k):
                if best < d <= limit:
                    best = d
    return best


def _get_attr_path(config: Any, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        else:
            node = getattr(node, part, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A validated search space; see the module docstring for the format.

    Use `load_search_space` or `SearchSpace.from_dict` to build one.
    """

    params: dict[str, Param]
    """Sampled parameters in sampling order (conditions before what they gate)."""
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dotted path -> value written into every trial's config."""
    constraints: tuple[Constraint, ...] = ()
    """Divisibility repairs applied after sampling, in order."""
    source: str = "<dict>"
    """File the space came from (for messages)."""
    base: TrainConfig | None = None
    """Config whose values feed constraints when a path is not sampled (see `with_base`)."""

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> SearchSpace:
        """Validate a parsed YAML mapping into a `SearchSpace`.

        Raises:
            SpaceError: Naming ``source``, the key and what is valid.
        """
        return _Parser(source).parse(data)

    def with_base(self, base: TrainConfig | None) -> SearchSpace:
        """This space with ``base`` as the default source of constraint operands."""
        return dataclasses.replace(self, base=base)

    # -- queries ------------------------------------------------------------------------------

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna parameter name -> distribution, virtual parameters included."""
        return {name: p.distribution for name, p in self.params.items()}

    @property
    def paths(self) -> list[str]:
        """Config paths this space may write (sampled, fixed and constrained)."""
        names = [n for n, p in self.params.items() if not p.virtual]
        names += list(self.fixed) + [c.divisor for c in self.constraints]
        return list(dict.fromkeys(names))

    # -- sampling -----------------------------------------------------------------------------

    def sample(
        self, trial: optuna.trial.BaseTrial, *, base: TrainConfig | None = None
    ) -> dict[str, Any]:
        """Sample one configuration: dotted path -> value, fixed values included.

        Args:
            trial: An Optuna trial (or ``optuna.trial.FixedTrial`` to replay parameters).
            base: Config supplying constraint operands that are not sampled; defaults to the
                space's `base`, else `TrainConfig()`.

        Returns:
            Values to pass to `apply`; inactive parameters are absent unless they have an
            ``otherwise`` value; virtual parameters are never included.
        """
        values: dict[str, Any] = copy.deepcopy(self.fixed)
        sampled: dict[str, Any] = {}
        for param in self.params.values():
            active = all(
                name in sampled and any(_same(sampled[name], v) for v in accepted)
                for name, accepted in param.when.items()
            )
            if active:
                sampled[param.name] = param.suggest(trial)
                if not param.virtual:
                    values[param.name] = sampled[param.name]
            elif param.has_otherwise:
                values[param.name] = copy.deepcopy(param.otherwise)
        repaired = self._repair(values, base if base is not None else self.base)
        if repaired:
            trial.set_user_attr(REPAIRED_ATTR, repaired)
        return values

    def _repair(self, values: dict[str, Any], base: TrainConfig | None) -> dict[str, int]:
        if not self.constraints:
            return {}
        source = base if base is not None else TrainConfig()
        repaired: dict[str, int] = {}

        def lookup(path: str) -> Any:
            value = values[path] if path in values else _get_attr_path(source, path)
            if value is _MISSING:
                raise SpaceError(
                    f"{self.source}: constraints: {path} is set neither by the trial nor by "
                    "the base config; valid: a path the base config has"
                )
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpaceError(
                    f"{self.source}: constraints: {path}={value!r} is not a positive int"
                )
            return value

        for constraint in self.constraints:
            product = math.prod(lookup(p) for p in constraint.into)
            current = lookup(constraint.divisor)
            fixed = _largest_divisor(product, current)
            if fixed != current:
                values[constraint.divisor] = fixed
                repaired[constraint.divisor] = fixed
        return repaired

    def apply(self, base: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
        """A validated `TrainConfig`: ``base`` with ``values`` written at their dotted paths.

        A list or dict value replaces the base value whole. Validation is that of
        `fxai_tune.rl.build_train_config`.

        Raises:
            fxai_tune.rl.ConfigError: When the resulting config is invalid.
        """
        tree = config_to_dict(base)
        for path, value in values.items():
            _set_path(tree, path, value)
        return build_train_config(tree)

    def check(self, base: TrainConfig) -> None:
        """Check that the space's bounds build with ``base`` (before any trial runs).

        Builds two configs: every parameter at its low end (first choice) and every one at its
        high end (last choice), fixed values and constraint repairs included. On a failure the
        parameters are tried one at a time to name the culprit.

        Raises:
            SpaceError: Naming the parameter and value that do not build.
        """
        params = [p for p in self.params.values() if not p.virtual]

        def ends(param: Param) -> list[Any]:
            dist = param.distribution
            if isinstance(dist, FloatDistribution | IntDistribution):
                return [dist.low, dist.high]
            choices = param.choices()
            return [choices[0], choices[-1]]

        def build(extra: dict[str, Any]) -> str | None:
            values = {**copy.deepcopy(self.fixed), **extra}
            try:
                self._repair(values, base)
                self.apply(base, values)
            except ValueError as error:  # ConfigError and SpaceError
                return str(error)
            return None

        for corner in (0, 1):
            error = build({p.name: ends(p)[corner] for p in params})
            if error is None:
                continue
            if not params:
                raise SpaceError(f"{self.source}: fixed: does not build: {error}")
            for param in params:
                for value in ends(param):
                    single = build({param.name: value})
                    if single is not None:
                        raise SpaceError(
                            f"{self.source}: params.{param.name}: value {value!r} does not "
                            f"build: {single}"
                        )
            side = ("low", "high")[corner]
            raise SpaceError(
                f"{self.source}: params: all parameters at their {side} ends do not build "
                f"together: {error}"
            )


def load_search_space(name_or_path: str | os.PathLike[str]) -> SearchSpace:
    """Read and validate a search space file.

    Args:
        name_or_path: A bare name (``ppo_quick`` -> ``search_spaces/ppo_quick.yaml`` under the
            current directory, else the one shipped in the package) or a path to a YAML file.

    Raises:
        SpaceError: One line naming the file, the key and what is valid.

    Example:
        >>> space = load_search_space("ppo_quick")
        >>> "ppo.learning_rate" in space.distributions()
        True
    """
    path = find_named_file(name_or_path, "search_spaces", SpaceError, kind="search space")
    return SearchSpace.from_dict(read_yaml(path, SpaceError), source=str(path))


# --------------------------------------------------------------------------------------------
# Parsing


class _Parser:
    """Turns a parsed YAML mapping into a `SearchSpace`, with one-line errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> SpaceError:
        return SpaceError(f"{self.source}: {key}: {problem}")

    def parse(self, data: Any) -> SearchSpace:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SpaceError(
                f"{self.source}: expected a mapping with sections {list(_SECTIONS)}, "
                f"got {type(data).__name__}"
            )
        unknown = [k for k in data if k not in _SECTIONS]
        if unknown:
            raise self.fail(str(unknown[0]), f"unknown section; valid: {list(_SECTIONS)}")
        if not data.get("params") and not data.get("fixed"):
            raise SpaceError(f"{self.source}: the space has neither params nor fixed values")
        raw_params = self.mapping(data.get("params"), "params")
        params = {str(name): self.param(str(name), spec) for name, spec in raw_params.items()}
        fixed = self.fixed(self.mapping(data.get("fixed"), "fixed"), params)
        constraints = self.constraints(data.get("constraints"))
        ordered = self.order(params)
        return SearchSpace(
            params=ordered, fixed=fixed, constraints=constraints, source=self.source
        )

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping of dotted paths, got {type(value).__name__}")
        return value

    # -- paths --------------------------------------------------------------------------------

    def field_type(self, path: str, key: str) -> Any:
        annotation = config_field_type(path)
        if annotation is None:
            close = difflib.get_close_matches(path, _known_paths(), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise self.fail(
                key,
                f"unknown config path {path!r}; {hint}valid: a dotted path of a TrainConfig "
                "field (e.g. ppo.learning_rate, env.windows.1h)",
            )
        section = _strip_optional(annotation)
        if dataclasses.is_dataclass(section):
            fields = [f"{path}.{f.name}" for f in dataclasses.fields(section)]
            raise self.fail(
                key, f"{path!r} is a config section, not a value; valid: one of its fields, "
                f"e.g. {', '.join(fields[:3])}"
            )
        return annotation

    def check_fits(self, annotation: Any, value: Any, key: str, what: str) -> None:
        if not _fits(annotation, value):
            raise self.fail(
                key,
                f"{what} {value!r} does not fit the field's type; valid: {_type_name(annotation)}",
            )

    # -- params -------------------------------------------------------------------------------

    def param(self, name: str, spec: Any) -> Param:
        key = f"params.{name}"
        if not isinstance(spec, Mapping):
            raise self.fail(
                key, "expected a mapping like {type: float, low: 0.1, high: 0.3}, "
                f"got {spec!r}"
            )
        kind = spec.get("type")
        if kind is None:
            raise self.fail(key, f"missing 'type'; valid: {', '.join(PARAM_TYPES)}")
        if kind not in PARAM_TYPES:
            valid = ", ".join(PARAM_TYPES)
            raise self.fail(f"{key}.type", f"unknown type {kind!r}; valid: {valid}")
        unknown = [f for f in spec if f not in _FIELDS[kind]]
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}",
                f"unknown field for type {kind}; valid: {list(_FIELDS[kind])}",
            )
        virtual = spec.get("virtual", False)
        if not isinstance(virtual, bool):
            raise self.fail(f"{key}.virtual", f"expected true or false, got {virtual!r}")
        annotation: Any = Any
        if virtual:
            if config_field_type(name) is not None:
                raise self.fail(
                    f"{key}.virtual", "a virtual parameter may not be named after a config "
                    "path; valid: a name that is not a TrainConfig field (e.g. use_target_kl)"
                )
        else:
            annotation = self.field_type(name, key)
        if kind == "categorical":
            distribution, encoded = self.categorical(spec, key, annotation)
        else:
            distribution, encoded = self.numeric(kind, spec, key, annotation), False
        when = self.when(spec.get("when"), key) if "when" in spec else {}
        otherwise = spec.get("otherwise", _MISSING)
        if otherwise is not _MISSING:
            if not when:
                raise self.fail(f"{key}.otherwise", "only valid together with 'when'")
            if virtual:
                raise self.fail(f"{key}.otherwise", "a virtual parameter has no config value")
            self.check_fits(annotation, otherwise, f"{key}.otherwise", "value")
        return Param(name, distribution, when, otherwise, virtual, encoded)

    def number(self, spec: Mapping[str, Any], field: str, key: str, kind: str) -> Any:
        if field not in spec:
            raise self.fail(key, f"missing '{field}'; valid: {list(_FIELDS[kind])}")
        value = spec[field]
        if isinstance(value, str):  # e.g. "1e-5" read as text by a YAML 1.1 tool
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise self.fail(f"{key}.{field}", f"expected a finite number, got {spec[field]!r}")
        if kind == "int":
            if not float(value).is_integer():
                raise self.fail(f"{key}.{field}", f"expected an integer, got {spec[field]!r}")
            return int(value)
        return float(value)

    def numeric(self, kind: str, spec: Mapping[str, Any], key: str, annotation: Any) -> Any:
        low = self.number(spec, "low", key, kind)
        high = self.number(spec, "high", key, kind)
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(f"{key}.log", f"expected true or false, got {log!r}")
        step = self.number(spec, "step", key, kind) if spec.get("step") is not None else None
        if low > high:
            raise self.fail(key, f"low={low!r} > high={high!r}; valid: low <= high")
        if log and low <= 0:
            raise self.fail(f"{key}.low", f"log scale needs low > 0, got low={low!r}")
        if step is not None:
            if step <= 0:
                raise self.fail(f"{key}.step", f"expected step > 0, got step={step!r}")
            if log and not (kind == "int" and step == 1):
                raise self.fail(
                    f"{key}.step", "step cannot be combined with log: true; valid: one of them"
                )
        for end, value in (("low", low), ("high", high)):
            self.check_fits(annotation, value, f"{key}.{end}", "value")
        try:
            if kind == "float":
                return FloatDistribution(low, high, log=log, step=step)
            return IntDistribution(low, high, log=log, step=step or 1)
        except ValueError as error:
            raise self.fail(key, str(error).splitlines()[0]) from None

    def categorical(
        self, spec: Mapping[str, Any], key: str, annotation: Any
    ) -> tuple[CategoricalDistribution, bool]:
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self.fail(
                f"{key}.choices", f"expected a non-empty list of values, got {choices!r}"
            )
        for choice in choices:
            self.check_fits(annotation, choice, f"{key}.choices", "choice")
        encoded = any(isinstance(c, list | dict) for c in choices)
        stored = [json.dumps(c, sort_keys=True) for c in choices] if encoded else list(choices)
        keys = [json.dumps(c, sort_keys=True) + type(c).__name__ for c in choices]
        if len(set(keys)) != len(keys):
            raise self.fail(f"{key}.choices", f"duplicate choices in {choices!r}")
        return CategoricalDistribution(stored), encoded

    def when(self, spec: Any, key: str) -> dict[str, tuple[Any, ...]]:
        if not isinstance(spec, Mapping) or not spec:
            raise self.fail(
                f"{key}.when", f"expected a mapping {{param: value}}, got {spec!r}"
            )
        return {
            str(name): tuple(value) if isinstance(value, list) else (value,)
            for name, value in spec.items()
        }

    # -- cross-references ---------------------------------------------------------------------

    def order(self, params: dict[str, Param]) -> dict[str, Param]:
        """Check conditions and return params with every condition before what it gates."""
        for param in params.values():
            for name, accepted in param.when.items():
                key = f"params.{param.name}.when.{name}"
                target = params.get(name)
                if target is None:
                    raise self.fail(
                        key, f"unknown parameter {name!r}; valid: the parameters of this space "
                        f"{sorted(n for n in params if n != param.name)}"
                    )
                if target is param:
                    raise self.fail(key, "a parameter cannot depend on itself")
                dist = target.distribution
                if isinstance(dist, CategoricalDistribution) and not target.encoded:
                    valid = list(dist.choices)
                    ok = all(any(_same(v, c) for c in valid) for v in accepted)
                elif isinstance(dist, IntDistribution):
                    valid = [f"int in [{dist.low}, {dist.high}]"]
                    ok = all(_fits(int, v) and dist.low <= v <= dist.high for v in accepted)
                else:
                    raise self.fail(
                        key, f"{name!r} is a float or list-valued parameter; valid: a "
                        "categorical (scalar choices) or int parameter"
                    )
                if not ok:
                    raise self.fail(key, f"{list(accepted)!r} never matches; valid: {valid}")
        ordered: dict[str, Param] = {}
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in ordered:
                return
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name):], name])
                raise self.fail(f"params.{name}.when", f"conditions form a cycle: {cycle}")
            visiting.append(name)
            for dependency in params[name].when:
                visit(dependency)
            visiting.pop()
            ordered[name] = params[name]

        for name in params:
            visit(name)
        return ordered

    def fixed(self, raw: Mapping[str, Any], params: dict[str, Param]) -> dict[str, Any]:
        fixed: dict[str, Any] = {}
        for name, value in raw.items():
            path, key = str(name), f"fixed.{name}"
            annotation = self.field_type(path, key)
            if path in params:
                raise self.fail(key, "the path is also under params; valid: one of the two")
            self.check_fits(annotation, value, key, "value")
            fixed[path] = value
        return fixed

    def constraints(self, raw: Any) -> tuple[Constraint, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self.fail("constraints", f"expected a list, got {type(raw).__name__}")
        result = []
        for i, spec in enumerate(raw):
            key = f"constraints[{i}]"
            if not isinstance(spec, Mapping):
                raise self.fail(key, "expected a mapping like {divides: A, into: [B, C]}")
            unknown = [k for k in spec if k not in (*CONSTRAINT_KINDS, "into")]
            if unknown:
                raise self.fail(
                    f"{key}.{unknown[0]}",
                    "unknown constraint field; valid: {divides: PATH, into: [PATH, ...]}",
                )
            if "divides" not in spec:
                raise self.fail(
                    key, "missing 'divides'; valid: {divides: PATH, into: [PATH, ...]}"
                )
            divisor = spec["divides"]
            into = spec.get("into")
            if isinstance(into, str):
                into = [into]
            if not isinstance(into, list) or not into:
                raise self.fail(f"{key}.into", f"expected a non-empty list of paths, got {into!r}")
            for field, path in [("divides", divisor), *(("into", p) for p in into)]:
                if not isinstance(path, str):
                    raise self.fail(f"{key}.{field}", f"expected a dotted path, got {path!r}")
                annotation = self.field_type(path, f"{key}.{field}")
                if not _fits(annotation, 1) or _fits(annotation, 1.5):
                    raise self.fail(
                        f"{key}.{field}", f"{path} is of type {_type_name(annotation)}; "
                        "valid: an int field"
                    )
            if divisor in into:
                raise self.fail(
                    f"{key}.into", f"{divisor} cannot divide a product containing itself"
                )
            result.append(Constraint(divisor, tuple(into)))
        return tuple(result)
