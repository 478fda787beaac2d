"""Workers through Optuna's gRPC storage proxy (issue 14): the cap, the lock, stale retries."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import optuna
import pytest
from _tune_fixtures import (
    CLI,
    assert_two_workers_stop_at_the_cap,
    start_worker,
    unique_name,
    wait_for_sampled_trial,
    write_tiny_study,
)
from optuna.trial import TrialState

from fxai_tune.tune import (
    DatabaseOutage,
    StorageError,
    fail_stale_trials,
    load_study_config,
    make_storage,
    open_study,
    run_worker,
)
from fxai_tune.tune._grpc import grpc_study_lock, grpc_target



def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def proxy_url(tmp_path_factory):
    """``grpc://`` URL of a ``fxai-tune storage-proxy`` serving a fresh SQLite file."""
    database = tmp_path_factory.mktemp("proxy") / "proxied.db"
    port = _free_port()
    lock_port = _free_port()
    server = subprocess.Popen(
        [*CLI, "storage-proxy", "--storage", f"sqlite:///{database}", "--port", str(port),
         "--lock-port", str(lock_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"grpc://127.0.0.1:{port}?lock_port={lock_port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            make_storage(url).close()
            break
        except StorageError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError(server.communicate()[0]) from None
    yield url
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def test_grpc_urls_are_parsed_and_bad_ones_refused_in_one_line():
    assert grpc_target("grpc://h:13000") == grpc_target("grpc://h:13000?lock_port=13001")
    assert grpc_target("grpc://h:1?lock_port=9").lock_port == 9
    for bad in ("grpc://h", "grpc://h:1/db", "grpc://h:1?tls=1", "grpc://h:1?lock_port=x"):
        with pytest.raises(StorageError) as caught:
            make_storage(bad)
        assert "\n" not in str(caught.value)


def test_storage_proxy_refuses_a_journal_storage_in_one_line(tmp_path):
    result = subprocess.run(
        [*CLI, "storage-proxy", "--storage", f"journal:///{tmp_path}/x.log"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "valid: sqlite, postgresql" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_grpc_study_lock_excludes_a_second_holder_and_a_killed_holder_frees_it(proxy_url):
    events: list[str] = []
    held = threading.Event()

    def first() -> None:
        with grpc_study_lock(proxy_url, "s"):
            events.append("first in")
            held.set()
            time.sleep(0.5)
            events.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    with grpc_study_lock(proxy_url, "s"):
        events.append("second in")
    thread.join()
    assert events == ["first in", "first out", "second in"]

    # a holder killed inside the lock frees it with its connection (grpc alone: fast to start)
    target = grpc_target(proxy_url)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import grpc, time\n"
            f"channel = grpc.insecure_channel('127.0.0.1:{target.lock_port}')\n"
            "stream = channel.unary_stream('/fxai_tune.Coordination/HoldLock')"
            "(b'{\"study\": \"s\"}')\n"
            "next(stream); print('held', flush=True); time.sleep(600)"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    acquired = threading.Event()

    def take() -> None:
        with grpc_study_lock(proxy_url, "s"):
            acquired.set()

    threading.Thread(target=take, daemon=True).start()
    assert not acquired.wait(1)  # held while the holder lives
    holder.kill()
    holder.wait()
    assert acquired.wait(10)


def test_stale_trial_behind_the_proxy_is_failed_and_retried(proxy_url):
    storage = make_storage(proxy_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name=unique_name("stale"), storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)  # then its worker "dies"
    assert fail_stale_trials(study) == []
    time.sleep(3)
    assert fail_stale_trials(study) == [trial.number]
    trials = study.get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    assert trials[-1].state == TrialState.WAITING and trials[-1].params == trial.params


@pytest.mark.slow
def test_worker_killed_behind_the_proxy_leaves_a_fail_and_a_retry_completes_it(
    tmp_path, proxy_url
):
    path = write_tiny_study(
        tmp_path, unique_name("gkill"), storage=proxy_url, n_trials=1, heartbeat_interval=1,
        grace_period=3, total_timesteps=64 * 4 * 32,
    )
    config = load_study_config(path)
    study = open_study(config)
    victim = start_worker(path)
    running = wait_for_sampled_trial(study)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(config.grace_period + 1)
    counts = run_worker(config, accelerator="cpu", torch_threads=1)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[running[0].number].state == TrialState.FAIL
    victim_number = running[0].number
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim_number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert counts.counted == 1 and counts.complete == 1


@pytest.mark.slow
def test_two_worker_processes_through_the_proxy_stop_at_exactly_the_cap(tmp_path, proxy_url):
    assert_two_workers_stop_at_the_cap(tmp_path, proxy_url, "gcap")


# ------------------------------------------------------------------ proxy outage


class InProcessProxy:
    """Optuna's gRPC proxy server on a SQLite file in this process, to stop and start again
    on the same port (the coordination service is not needed without heartbeat)."""

    def __init__(self, database) -> None:
        self.storage = optuna.storages.RDBStorage(f"sqlite:///{database}")
        self.port = _free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        from optuna.storages._grpc.server import make_server

        self.server = make_server(self.storage, "127.0.0.1", self.port)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


@pytest.fixture
def in_process_proxy(tmp_path):
    proxy = InProcessProxy(tmp_path / "proxied.db")
    proxy.start()
    yield proxy
    proxy.stop()


def test_a_finished_trial_rides_out_a_proxy_outage_and_is_kept(in_process_proxy):
    storage = make_storage(in_process_proxy.url, outage_window=30)
    study = optuna.create_study(study_name="outage", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    in_process_proxy.stop()
    threading.Timer(1.5, in_process_proxy.start).start()  # back within the window
    study.tell(trial, 0.25)  # retried with backoff until the proxy is back
    [stored] = optuna.load_study(
        study_name="outage", storage=in_process_proxy.storage
    ).get_trials()
    assert stored.state == TrialState.COMPLETE and stored.value == 0.25
    assert stored.params == trial.params


def test_proxy_away_past_the_window_is_one_line_naming_host_and_port(in_process_proxy):
    url = f"{in_process_proxy.url}?lock_port={_free_port()}"  # no coordination service there
    study = optuna.create_study(study_name="gone", storage=make_storage(url, outage_window=1))
    trial = study.ask()
    in_process_proxy.stop()
    for call in (lambda: study.tell(trial, 1.0),
                 lambda: grpc_study_lock(url, "gone", outage_window=1).__enter__()):
        with pytest.raises(DatabaseOutage) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and f"127.0.0.1:{in_process_proxy.port}" in message
        assert "storage proxy" in message and "outage_window=1" in message, message
    in_process_proxy.start()  # for the fixture's stop
