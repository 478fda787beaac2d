"""A non-editable install: the shipped studies and search spaces come with the package, and a
shipped study's database lands under the working directory (issue 12)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# prints where fxai_tune was imported from, then runs `fxai-tune status --study demo`, which
# resolves the shipped study and names its storage (no study stored there yet: exit 2)
PROBE = """
import fxai_tune
print("imported", fxai_tune.__file__)
from fxai_tune.cli.main import app
app(["status", "--study", "demo"])
"""


@pytest.mark.slow
def test_a_non_editable_install_runs_the_shipped_demo_study_storing_under_the_cwd(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("fxai_tune", "hydra_plugins"):
        shutil.copytree(
            ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.db")
        )
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (site / "fxai_tune" / "studies" / "configs" / "demo_base.yaml").is_file()
    assert (site / "fxai_tune" / "search_spaces" / "ppo_quick.yaml").is_file()

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("FXAI_TUNE_HOME", "PYTHONPATH")}
    result = subprocess.run(
        [sys.executable, "-P", "-c", PROBE], cwd=work, env={**env, "PYTHONPATH": str(site)},
        capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert f"imported {site / 'fxai_tune' / '__init__.py'}" in output, output
    assert result.returncode == 2, output  # found, but nothing stored yet
    assert f"no study 'demo' in sqlite:///{work.resolve() / 'studies' / 'demo.db'}" in output
    assert not [p for p in site.rglob("*") if p.suffix in (".db", ".lock")]
