"""How `fxai-tune run` starts its workers: storage URL by environment, the parent's interpreter
and import path, one log folder per run (issue 12, secrets and packaging)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from _tune_fixtures import write_tiny_study
from typer.testing import CliRunner

from fxai_tune import STORAGE_ENV
from fxai_tune.cli.main import app
from fxai_tune.tune import _launch, launch_workers, new_log_dir, python_command

SECRET_URL = "postgresql://bob:s3cret-pw@db.example:5432/optuna"


class _FakeProcess:
    """What `launch_workers` keeps of a started process, without starting one."""

    def __init__(self, command: list[str], *, env: dict[str, str], stdout, **_: object) -> None:
        self.command, self.env, self.log = command, env, Path(stdout.name)
        self.returncode = 0

    def poll(self) -> int:
        return 0


@pytest.fixture
def fake_popen(monkeypatch):
    monkeypatch.setattr(_launch.subprocess, "Popen", _FakeProcess)


def _launch_two(tmp_path: Path, url: str = SECRET_URL) -> list[_launch.WorkerProcess]:
    return launch_workers(
        "demo", workers=2, storage_url=url, n_trials=4, timeout=None, devices=["cpu"],
        log_dir=tmp_path / "logs",
    )


def test_worker_command_lines_hold_no_storage_url_the_environment_does(tmp_path, fake_popen):
    for worker in _launch_two(tmp_path):
        command = " ".join(worker.process.command)
        assert "s3cret" not in command and "db.example" not in command
        assert "--storage" not in worker.process.command
        assert worker.process.env[STORAGE_ENV] == SECRET_URL


def test_a_worker_given_the_url_only_by_the_environment_opens_that_study(tmp_path):
    path = write_tiny_study(tmp_path, "byenv", n_trials=1)  # its file names byenv.db
    url = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name="byenv", storage=url, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=1.0))  # the cap of 1 is reached there
    result = CliRunner().invoke(
        app, ["worker", "--study", str(path), "--checked"], env={STORAGE_ENV: url}
    )
    assert result.exit_code == 0, result.output
    assert "already has its 1 trial" in result.output
    assert not (tmp_path / "byenv.db").exists()  # the file's storage is never touched


def test_workers_run_the_parents_interpreter_and_import_path(tmp_path, fake_popen):
    worker = _launch_two(tmp_path)[0]
    assert worker.process.command[:3] == [sys.executable, "-P", "-m"]
    assert worker.process.env["PYTHONSAFEPATH"] == "1"  # the worker's own children (DDP ranks)
    entries = worker.process.env["PYTHONPATH"].split(os.pathsep)
    assert entries == list(dict.fromkeys(os.path.abspath(p) if p else os.getcwd()
                                         for p in sys.path))


def test_a_fxai_tune_folder_in_the_working_directory_is_not_imported_by_workers(tmp_path):
    decoy = tmp_path / "fxai_tune"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy in the cwd was imported')")
    python, env = python_command()
    probe = "import fxai_tune; print(fxai_tune.__file__)"
    result = subprocess.run(
        [*python, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    grandchild = subprocess.run(  # as Lightning starts a DDP rank: python -m, no -P
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert grandchild.stdout == result.stdout, grandchild.stderr
    import fxai_tune

    assert Path(result.stdout.strip()) == Path(fxai_tune.__file__)


def test_each_run_keeps_its_worker_logs_in_a_folder_of_its_own(tmp_path, fake_popen):
    first, second = new_log_dir(tmp_path / "logs"), new_log_dir(tmp_path / "logs")
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == second.parent == tmp_path / "logs"
    started = launch_workers(
        "demo", workers=2, storage_url=SECRET_URL, n_trials=4, timeout=None, devices=["cpu"],
        log_dir=second,
    )
    assert [w.log_path for w in started] == [second / "worker_0.log", second / "worker_1.log"]
    assert all(p.is_file() for p in (second / "worker_0.log", second / "worker_1.log"))


def test_run_prints_the_log_folder_of_this_run(tmp_path, monkeypatch):
    """Two runs (workers and progress stubbed): two log folders, each printed."""
    import fxai_tune.tune as tune

    path = write_tiny_study(tmp_path, "logs", n_trials=1)
    folders = []

    def fake_launch(*_: object, log_dir: Path, **__: object) -> list:
        folders.append(log_dir)
        return []

    monkeypatch.setattr(tune, "launch_workers", fake_launch)
    monkeypatch.setattr(tune, "watch", lambda *a, **k: [])
    outputs = [CliRunner().invoke(app, ["run", "--study", str(path)]) for _ in range(2)]
    assert [r.exit_code for r in outputs] == [0, 0], outputs[0].output
    assert len(set(folders)) == 2 and all(f.is_dir() for f in folders)
    for result, folder in zip(outputs, folders, strict=True):
        assert f"worker logs in {folder}" in result.output.replace("\n", "")
