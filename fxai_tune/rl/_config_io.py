"""Reading and writing `TrainConfig` YAML files, with dotted ``key=value`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fxai_tune.rl._config import TrainConfig

__all__ = ["ConfigError", "config_to_dict", "load_train_config", "save_train_config"]


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message is one line."""


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def build_train_config(
    values: dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """A validated `TrainConfig` from nested values and dotted overrides (``ppo.gamma=0.9``).

    Unknown keys and wrongly typed values are rejected by OmegaConf's structured config;
    value ranges by the dataclasses' ``__post_init__``.
    """
    schema = OmegaConf.structured(TrainConfig)
    try:
        merged = OmegaConf.merge(schema, values or {})
        _replace_plain_dicts(merged, values or {})
        for override in overrides:
            if "=" not in override:
                raise ConfigError(f"override {override!r} is not of the form key=value")
            dotted = OmegaConf.from_dotlist([override])
            merged = OmegaConf.merge(merged, dotted)
            key = override.split("=", 1)[0].strip()
            value = OmegaConf.select(dotted, key)
            if isinstance(value, DictConfig):  # key={...}: the mapping replaces the field
                OmegaConf.update(merged, key, OmegaConf.to_container(value), merge=False)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(_first_line(error)) from None
    except (ValueError, TypeError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(_first_line(error)) from None
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"expected a TrainConfig, got {type(config).__name__}")
    return config


def _replace_plain_dicts(merged: DictConfig, values: dict[str, Any], prefix: str = "") -> None:
    """Make a given mapping replace a dict-typed field (e.g. ``env.windows``) whole.

    OmegaConf merges mappings key by key, which would keep default timeframes that a config
    left out; dataclass-typed sections still merge field by field.
    """
    for key, value in values.items():
        path = f"{prefix}{key}"
        node = OmegaConf.select(merged, path, throw_on_missing=False)
        if not isinstance(value, dict) or not isinstance(node, DictConfig):
            continue
        if OmegaConf.get_type(node) is dict:
            OmegaConf.update(merged, path, value, merge=False)
        else:
            _replace_plain_dicts(merged, value, f"{path}.")


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML training config (the format `export-best` writes) and apply overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as error:  # YAML errors come in several types
        raise ConfigError(f"{path}: cannot parse YAML: {_first_line(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(values).__name__}")
    try:
        return build_train_config(values, overrides)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain nested dict of a config (YAML- and JSON-serialisable)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def save_train_config(config: TrainConfig, path: str | Path) -> Path:
    """Write ``config`` as YAML that `load_train_config` reads back to an equal config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    return path
