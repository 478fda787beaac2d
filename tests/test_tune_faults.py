"""Fault injection (issue 11): Ctrl-C, killed workers, stale trials, non-finite values,
unwritable artifacts and a database outage on a PostgreSQL server the test starts itself.

Checked throughout: nothing lost, nothing left RUNNING, the cap exact, no traceback.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
from _tune_fixtures import CLI, default_sigint, start_worker, wait_for_sampled_trial, write_tiny_study
from optuna.trial import TrialState

import fxai_tune.tune._objective as objective_module
from fxai_tune.tune import (
    count_trials,
    load_study_config,
    open_study,
    run_worker,
    study_status,
)

LONG = 4 * 64 * 4 * 32  # env steps of a trial long enough to interrupt (~25 s on one core)


def _finished(study: optuna.Study) -> int:
    return count_trials(study.get_trials()).finished


# -------------------------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
def test_ctrl_c_requeues_the_trial_and_the_next_run_ends_with_the_cap(tmp_path):
    path = write_tiny_study(tmp_path, "sigint", n_trials=2, total_timesteps=LONG)
    config = load_study_config(path)
    study = open_study(config)
    worker = start_worker(path)
    running = wait_for_sampled_trial(study)[0]
    time.sleep(2)
    worker.send_signal(signal.SIGINT)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 130, output
    assert "Traceback" not in output, output
    trials = {t.number: t for t in study.get_trials()}
    interrupted = trials[running.number]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["fail_reason"].startswith("interrupted")
    queued = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert len(queued) == 1 and queued[0].params == interrupted.params
    assert count_trials(study.get_trials()).counted == 1  # the cap is not used up

    counts = run_worker(config, accelerator="cpu", torch_threads=1)
    trials = study.get_trials()
    assert counts.complete == 2 and counts.finished == 2  # n_trials finished trials
    rerun = next(t for t in trials if t.user_attrs.get("requeued_from") == running.number)
    assert rerun.state == TrialState.COMPLETE and rerun.params == interrupted.params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.slow
def test_ctrl_c_of_run_with_two_workers_loses_nothing_and_rerun_reaches_the_cap(tmp_path):
    path = write_tiny_study(tmp_path, "sigint2", n_trials=3, total_timesteps=LONG)
    study = open_study(load_study_config(path))
    parent = subprocess.Popen(
        [*CLI, "run", "--study", str(path), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint,
    )
    wait_for_sampled_trial(study)
    time.sleep(3)
    parent.send_signal(signal.SIGINT)
    output = parent.communicate(timeout=180)[0]
    assert parent.returncode == 130, output
    assert "Traceback" not in output, output
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert interrupted, output
    assert count_trials(trials).counted <= 3

    rerun = subprocess.run(
        [*CLI, "run", "--study", str(path), "--workers", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = study.get_trials()
    counts = count_trials(trials)
    assert counts.finished == 3 and counts.complete == 3
    done = [t.params for t in trials if t.state == TrialState.COMPLETE]
    assert all(t.params in done for t in interrupted)  # their parameters were re-run


# ------------------------------------------------------------------- dead worker, stale trials


@pytest.mark.slow
@pytest.mark.parametrize("max_retry", [3, 0])
def test_killed_worker_shows_stale_in_status_and_run_fails_it_on_start(tmp_path, max_retry):
    path = write_tiny_study(
        tmp_path, f"stale{max_retry}", n_trials=1, heartbeat_interval=1, grace_period=3,
        total_timesteps=LONG, max_retry=max_retry,
    )
    config = load_study_config(path)
    study = open_study(config)
    victim = start_worker(path)
    running = wait_for_sampled_trial(study)[0]
    time.sleep(2)  # its parameters are sampled
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = study.get_trials()[running.number]
    assert killed.params
    time.sleep(config.grace_period + 1.5)

    status = subprocess.run(
        [*CLI, "status", "--study", str(path)], capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert f"trial {running.number} is stale" in status.stdout, status.stdout
    stale = study_status(study, grace_period=config.grace_period)["stale"]
    assert stale[0]["number"] == running.number and stale[0]["heartbeat_age_s"] > 3

    result = subprocess.run(
        [*CLI, "run", "--study", str(path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed 1 stale trial" in result.stdout, result.stdout
    trials = study.get_trials()
    assert trials[running.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retries) == (1 if max_retry else 0)  # the study key max_retry
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    if max_retry:
        assert retries[0].state == TrialState.COMPLETE
        assert retries[0].params == killed.params


# ----------------------------------------------------- non-finite values, unwritable artifacts


def _fake_scores(monkeypatch, outcome):
    """Replace training with ``outcome(trial, upload)``: the worker loop, the storage and the
    objective wrapper stay real."""

    def fake(trial, config, objective, *, seeds_per_trial, upload):
        return outcome(trial, upload)

    monkeypatch.setattr(objective_module, "score_trial", fake)


def test_non_finite_value_or_loss_fails_that_trial_with_the_reason_and_the_study_goes_on(
    tmp_path, monkeypatch
):
    def outcome(trial, upload):
        if trial.number == 0:
            return [math.nan]
        if trial.number == 1:
            raise FloatingPointError("non-finite loss in 1 of 4 minibatches")
        return [0.5]

    _fake_scores(monkeypatch, outcome)
    path = write_tiny_study(tmp_path, "nan", n_trials=4, max_failure_rate=1.0)
    counts = run_worker(load_study_config(path), accelerator="cpu")
    trials = open_study(load_study_config(path)).get_trials()
    assert counts.complete == 2 and counts.failed == 2
    assert trials[0].user_attrs["fail_reason"] == "NaN/inf: objective val/episode_reward = nan"
    assert trials[1].user_attrs["fail_reason"].startswith("NaN/inf: non-finite loss")


def test_an_artifact_that_cannot_be_written_fails_that_trial_never_the_worker(
    tmp_path, monkeypatch
):
    def outcome(trial, upload):
        artifact = tmp_path / f"curve_{trial.number}.png"
        artifact.write_text("x")
        upload(artifact)
        return [0.1]

    def upload_artifact(*, artifact_store, file_path, study_or_trial):
        if study_or_trial.number == 0:
            raise PermissionError(13, "Permission denied", file_path)
        return "id"

    _fake_scores(monkeypatch, outcome)
    monkeypatch.setattr(objective_module, "upload_artifact", upload_artifact)
    path = write_tiny_study(tmp_path, "art", n_trials=2, max_failure_rate=1.0)
    counts = run_worker(load_study_config(path), accelerator="cpu")
    trials = open_study(load_study_config(path)).get_trials()
    assert counts.complete == 1 and counts.failed == 1
    reason = trials[0].user_attrs["fail_reason"]
    assert reason.startswith("cannot write artifact") and "curve_0.png" in reason
    assert "Permission denied" in reason


# ------------------------------------------------------------------ database outage


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


class OwnPostgres:
    """A PostgreSQL server of this test on a free port (initdb + pg_ctl), to stop and start."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.data = Path(tempfile.mkdtemp(prefix="fxai-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as postgres
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user for initdb")
            os.chown(self.data, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / tool), *args],
            check=True, capture_output=True, timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                 str(self.data / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture(scope="module")
def own_postgres():
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("initdb/pg_ctl not installed (PATH or /usr/lib/postgresql/*/bin)")
    server = OwnPostgres(bin_dir)
    server.start()
    yield server
    server.remove()


@pytest.mark.slow
def test_two_workers_ride_out_a_database_outage_and_lose_nothing(tmp_path, own_postgres):
    path = write_tiny_study(
        tmp_path, "outage", storage=own_postgres.url, n_trials=3, total_timesteps=LONG,
        heartbeat_interval=1, grace_period=4, outage_window=60,
    )
    config = load_study_config(path)
    study = open_study(config)
    workers = [start_worker(path, "--worker-index", str(i)) for i in range(2)]
    deadline = time.monotonic() + 180
    while len(wait_for_sampled_trial(study)) < 2:  # both workers are inside a trial
        assert time.monotonic() < deadline, "the two workers never ran trials together"
        time.sleep(0.2)
    time.sleep(2)
    own_postgres.stop()
    time.sleep(10)  # training goes on; storage calls retry
    own_postgres.start()
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    for output in outputs:
        assert "Traceback" not in output and "UnboundLocalError" not in output, output
    trials = study.get_trials()
    counts = count_trials(trials)
    assert counts.complete == 3 and counts.finished == 3, outputs  # nothing lost, cap exact
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_outage_past_the_window_stops_in_one_line_and_the_next_run_recovers(
    tmp_path, own_postgres
):
    path = write_tiny_study(
        tmp_path, "outage_long", storage=own_postgres.url, n_trials=1, total_timesteps=LONG,
        heartbeat_interval=1, grace_period=3, outage_window=5,
    )
    config = load_study_config(path)
    study = open_study(config)
    worker = start_worker(path)
    running = wait_for_sampled_trial(study)[0]
    own_postgres.stop()
    try:
        output = worker.communicate(timeout=300)[0]
    finally:
        own_postgres.start()
    assert worker.returncode == 4, output
    assert "Traceback" not in output, output
    last = [line for line in output.splitlines() if line.strip()][-1]
    assert f"127.0.0.1:{own_postgres.port}" in last and "outage_window=5" in last, output

    time.sleep(config.grace_period + 1)
    counts = run_worker(config, accelerator="cpu", torch_threads=1)
    trials = study.get_trials()
    assert trials[running.number].state == TrialState.FAIL  # failed as stale on start
    assert counts.complete == 1 and counts.finished == 1
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_reports_during_an_outage_never_stop_training_and_reach_the_database_after_it(
    own_postgres,
):
    from types import SimpleNamespace

    from fxai_tune.tune import OptunaPruningCallback, make_storage

    name = f"reports_{os.getpid()}_{time.monotonic_ns()}"
    study = optuna.create_study(
        study_name=name, storage=make_storage(own_postgres.url, outage_window=60),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0),
        direction="maximize",
    )
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    callback = OptunaPruningCallback(trial, "val/reward")

    def validate(value: float) -> None:  # what Lightning calls after each validation
        trainer = SimpleNamespace(
            sanity_checking=False, callback_metrics={"val/reward": value},
            is_global_zero=True, strategy=SimpleNamespace(broadcast=lambda verdict: verdict),
        )
        callback.on_validation_end(trainer, None)

    validate(0.1)
    own_postgres.stop()
    try:
        began = time.monotonic()
        validate(0.2)  # the database is away: queued, no pruning verdict, no wait
        validate(0.3)
        assert time.monotonic() - began < 5
    finally:
        own_postgres.start()
    study.tell(trial, 0.3)  # writes the queued reports first
    [stored] = optuna.load_study(
        study_name=name, storage=make_storage(own_postgres.url)
    ).get_trials()
    assert stored.state == TrialState.COMPLETE
    assert stored.intermediate_values == {0: 0.1, 1: 0.2, 2: 0.3}

    own_postgres.stop()
    threading.Timer(1.5, own_postgres.start).start()
    second = study.ask()  # creating a trial, sampling and reading wait for the database
    second.suggest_float("x", 0.0, 1.0)
    assert len(study.get_trials()) == 2
