"""Provenance of a study: what produced its trials, recorded once when the study is created.

The ``provenance`` user attribute of the study holds the versions of the packages a trial's
value depends on, the git commit of the project the study file lives in (when it is a git
checkout), and the sha256 of every data file the base config reads (issue 12). `fxai-tune
status --json` shows it; a continued study keeps the record of its creation.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
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


_COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1 or SHA-256 object name


def git_commit(directory: Path) -> str | None:
    """The commit checked out in the git work tree holding ``directory``, or None.

    Read from the repository's files (``HEAD``, loose refs, ``packed-refs``; worktrees
    followed through their ``.git`` file and ``commondir``), never by starting ``git``: a
    worker holding gRPC channels must not fork (grpcio's poller breaks in the forked child,
    grpc/grpc#43055). None when ``directory`` is not in a work tree, the branch has no commit
    yet, or a file cannot be read.
    """
    try:
        start = Path(directory).resolve()
        for folder in (start, *start.parents):
            dot_git = folder / ".git"
            if dot_git.is_dir():
                return _head_commit(dot_git)
            if dot_git.is_file():  # a linked worktree or a submodule: "gitdir: PATH"
                text = dot_git.read_text().strip()
                if not text.startswith("gitdir:"):
                    return None
                return _head_commit((folder / text.split(":", 1)[1].strip()).resolve())
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _head_commit(git_dir: Path) -> str | None:
    """What ``HEAD`` of ``git_dir`` points at: a detached commit or a branch's commit."""
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head if _COMMIT.fullmatch(head) else None
    ref = head.split(":", 1)[1].strip()
    common = git_dir  # a linked worktree keeps its branches in the main repository
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        if (base / ref).is_file():
            value = (base / ref).read_text().strip()
            return value if _COMMIT.fullmatch(value) else None
    if (common / "packed-refs").is_file():
        for line in (common / "packed-refs").read_text().splitlines():
            name = line.split(" ", 1)
            if len(name) == 2 and name[1] == ref and _COMMIT.fullmatch(name[0]):
                return name[0]
    return None  # a branch without a commit yet


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
