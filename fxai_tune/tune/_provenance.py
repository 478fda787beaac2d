"""Provenance of a study: what produced its trials, recorded once when the study is created.

The ``provenance`` user attribute of the study holds the versions of the packages a trial's
value depends on, the git commit of the project the study file lives in (when it is a git
checkout), and the sha256 of every data file the base config reads (issue 12). `fxai-tune
status --json` shows it; a continued study keeps the record of its creation.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

from fxai_tune.rl import TrainConfig

__all__ = ["PROVENANCE_ATTR", "PROVENANCE_PACKAGES", "data_files", "git_commit", "provenance"]

PROVENANCE_ATTR = "provenance"
"""User attribute of the study holding `provenance`'s record."""

PROVENANCE_PACKAGES = ("fxai-tune", "torch", "optuna", "pytorch-lightning", "gymnasium")
"""Distributions whose versions are recorded (None when one is not installed)."""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(directory: Path) -> str | None:
    """The commit checked out in the git work tree holding ``directory``, or None.

    Read-only (``git rev-parse``); None when git is missing, ``directory`` is not in a work
    tree, or the call fails for any other reason.
    """
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--verify", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def data_files(config: TrainConfig) -> list[Path]:
    """The files the data of ``config`` is read from (none for synthetic data or a gymnasium
    env): the bar file (the shipped sample included), the conversion pair's, the other side's."""
    from fxai_tune.data._sample import sample_path

    if config.env_id is not None or config.data.source == "synthetic":
        return []
    data = config.data
    source = sample_path() if data.source == "sample" else data.source
    files = [source, data.conversion_source, data.other_side_source]
    return [Path(f) for f in files if f is not None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(config: TrainConfig, *, project_dir: Path) -> dict[str, Any]:
    """What a study's trials depend on beyond its files (JSON-ready).

    Args:
        config: The study's base training config (its data files are hashed).
        project_dir: Directory whose git commit is recorded (the study file's).

    Returns:
        ``{"packages": {name: version}, "git_commit": str | None,
        "data_files": {path: sha256}}``.
    """
    return {
        "packages": {name: _version(name) for name in PROVENANCE_PACKAGES},
        "git_commit": git_commit(project_dir),
        "data_files": {str(path.resolve()): _sha256(path) for path in data_files(config)},
    }
