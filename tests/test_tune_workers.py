"""Worker processes on one shared study: exact trial cap, killed workers, Ctrl-C, dashboard."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from _tune_fixtures import (
    CLI,
    POSTGRES_URL,
    start_worker,
    unique_name,
    wait_for_sampled_trial,
    write_tiny_study,
)
from optuna.trial import TrialState

from fxai_tune.tune import load_study_config, normalize_storage_url, open_study, run_worker



def _postgres_or_skip() -> str:
    try:
        optuna.storages.RDBStorage(normalize_storage_url(POSTGRES_URL))
    except Exception as error:  # noqa: BLE001 - any connection problem
        if "FXAI_TEST_POSTGRES_URL" in os.environ:
            raise
        pytest.skip(f"PostgreSQL not reachable: {error}")
    return POSTGRES_URL


@pytest.fixture
def postgres_study(tmp_path):
    url = _postgres_or_skip()
    names: list[str] = []

    def make(prefix: str, **fields) -> object:
        name = unique_name(prefix)
        names.append(name)
        return write_tiny_study(tmp_path, name, storage=url, **fields)

    yield make
    for name in names:
        try:
            optuna.delete_study(study_name=name, storage=normalize_storage_url(url))
        except KeyError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("n_workers", [2, 4])
def test_concurrent_workers_on_postgres_finish_with_exactly_the_cap(postgres_study, n_workers):
    path = postgres_study(f"cap{n_workers}", n_trials=5)
    workers = [start_worker(path) for _ in range(n_workers)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * n_workers, outputs
    study = open_study(load_study_config(path))
    trials = study.get_trials()
    assert len(trials) == 5
    assert sorted(t.number for t in trials) == list(range(5))  # no duplicates, no gaps
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # really shared


@pytest.mark.slow
def test_killed_worker_leaves_its_trial_failed_and_a_retry_completes_it(postgres_study):
    path = postgres_study(
        "kill", n_trials=1, heartbeat_interval=1, grace_period=3, total_timesteps=64 * 4 * 32
    )
    config = load_study_config(path)
    study = open_study(config)
    victim = start_worker(path)
    running = wait_for_sampled_trial(study)[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(config.grace_period + 1)

    # a fresh worker fails the stale trial, re-queues it and runs the retry
    counts = run_worker(config, accelerator="cpu", torch_threads=1)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[running.number].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == running.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == running.params
    assert counts.counted == 1 and counts.complete == 1  # the cap counts the retry once


@pytest.mark.slow
def test_ctrl_c_records_the_running_trial_failed_and_exits_cleanly(tmp_path):
    path = write_tiny_study(tmp_path, "sigint", n_trials=1, total_timesteps=64 * 4 * 32)
    study = open_study(load_study_config(path))
    worker = start_worker(path)
    running = wait_for_sampled_trial(study)[0]
    time.sleep(2)
    worker.send_signal(signal.SIGINT)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 130, output
    trial = study.get_trials()[running.number]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith("interrupted")


@pytest.mark.slow
def test_run_with_two_workers_on_sqlite_warns_and_reaches_the_cap(tmp_path):
    path = write_tiny_study(tmp_path, "two", n_trials=4)
    result = subprocess.run(
        [*CLI, "run", "--study", str(path), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PostgreSQL" in result.stderr  # several workers on one SQLite file: a warning
    trials = open_study(load_study_config(path)).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_serves_the_study_on_loopback(tmp_path):
    path = write_tiny_study(tmp_path, "dash", n_trials=1)
    config = load_study_config(path)
    open_study(config).enqueue_trial({})  # the study exists with one trial
    port = _free_port()
    server = subprocess.Popen(
        [*CLI, "dashboard", "--study", str(path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as reply:
                    studies = json.load(reply)["study_summaries"]
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == [config.name]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_dashboard_warns_in_one_line_when_it_binds_beyond_loopback(
    tmp_path, monkeypatch, host, warned
):
    """Its endpoints delete studies and serve checkpoints to anyone (server not started)."""
    import optuna_dashboard
    from typer.testing import CliRunner

    from fxai_tune.cli.main import app

    path = write_tiny_study(tmp_path, "dashwarn", n_trials=1)
    open_study(load_study_config(path))
    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **k: served.append(k))
    result = CliRunner().invoke(
        app, ["dashboard", "--study", str(path), "--host", host, "--port", str(_free_port())]
    )
    assert result.exit_code == 0, result.output
    assert served and served[0]["host"] == host
    warnings = [line for line in result.output.splitlines() if "warning" in line]
    if warned:
        assert len(warnings) == 1 and f"binding {host}" in warnings[0], result.output
        assert "unauthenticated" in warnings[0] and "delete studies" in warnings[0]
    else:
        assert warnings == [], result.output


@pytest.mark.slow
def test_pruning_works_under_ddp_with_rdb_storage(tmp_path):
    """Two spawned CPU ranks: rank 0 reports once per validation, both stop, trial PRUNED."""
    pruner = {"name": "median", "options": {"n_startup_trials": 1}}
    path = write_tiny_study(tmp_path, "ddp", n_trials=3, pruner=pruner)
    ddp = "torch_threads: 1\n    strategy: ddp_spawn\n    devices: '2'"
    path.write_text(path.read_text().replace("torch_threads: 1", ddp, 1))
    config = load_study_config(path)
    assert config.base_config.trainer.strategy == "ddp_spawn"
    study = open_study(config)
    for _ in range(2):  # two finished trials that did far better at every validation
        study.add_trial(
            optuna.trial.create_trial(
                params={"ppo.learning_rate": 1e-3, "ppo.ent_coef": 1e-2},
                distributions=config.space.distributions(),
                value=1e9,
                intermediate_values={step: 1e9 for step in range(4)},
            )
        )
    run_worker(config, accelerator="cpu")
    trial = study.get_trials()[-1]
    assert trial.state == TrialState.PRUNED, trial.user_attrs.get("fail_reason")
    assert list(trial.intermediate_values) == [0]  # reported once (rank 0), at validation 0
