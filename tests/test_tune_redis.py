"""Optuna's journal storage on Redis (issue 14): the exact cap, heartbeat and stale retry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import optuna
import pytest
from _tune_fixtures import CLI, REDIS_URL, assert_two_workers_stop_at_the_cap, unique_name
from optuna.trial import TrialState

from fxai_tune.tune import (
    DatabaseOutage,
    StorageError,
    fail_stale_trials,
    load_study_config,
    make_storage,
    open_study,
    study_lock,
)
from fxai_tune.tune._redis import redis_study_lock, redis_target
from fxai_tune.tune._storage import storage_backend



@pytest.fixture
def redis_url():
    """A Redis storage URL with a key prefix of its own, its keys deleted afterwards."""
    redis = pytest.importorskip("redis")
    target = redis_target(REDIS_URL)
    client = redis.Redis.from_url(target.client_url)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        if "FXAI_TEST_REDIS_URL" in os.environ:
            raise
        pytest.skip(f"Redis not reachable: {error}")
    prefix = unique_name("fxai-test")
    yield f"{target.client_url}?prefix={prefix}"
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_redis_urls_are_recognised_and_bad_ones_refused_in_one_line():
    assert storage_backend("redis://127.0.0.1:6379/0") == "redis"
    assert redis_target("redis://h:1/2?prefix=p").prefix == "p"
    assert redis_target("redis://h:1/2?prefix=p").client_url == "redis://h:1/2"
    for bad in ("redis://h:1/db", "redis:///0", "redis://h:1/0?colour=red"):
        with pytest.raises(StorageError) as caught:
            storage_backend(bad)
        assert "\n" not in str(caught.value)
    with pytest.raises(StorageError) as caught:
        storage_backend("redis://bob:hunter2@h:1/x")
    assert "hunter2" not in str(caught.value)


def test_unreachable_redis_is_one_line_naming_host_and_port():
    with pytest.raises(StorageError) as caught:
        make_storage("redis://:hunter2@127.0.0.1:1/0")
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "\n" not in message and "hunter2" not in message


def test_stale_trial_on_redis_is_failed_and_retried_with_its_parameters(redis_url):
    storage = make_storage(redis_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="stale", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)  # then its worker "dies": no more beats
    assert fail_stale_trials(study) == []  # within the grace period
    time.sleep(2.5)
    assert fail_stale_trials(study) == [trial.number]
    trials = study.get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == trial.params
    assert retry.system_attrs["failed_trial"] == trial.number


def test_redis_study_lock_excludes_a_second_holder_until_released(redis_url):
    events: list[str] = []
    held = threading.Event()

    def first() -> None:
        with redis_study_lock(redis_url, "s"):
            events.append("first in")
            held.set()
            time.sleep(0.5)
            events.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    with redis_study_lock(redis_url, "s"):
        events.append("second in")
    thread.join()
    assert events == ["first in", "first out", "second in"]


def test_redis_study_lock_of_a_killed_holder_expires_with_its_lease(redis_url):
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from fxai_tune.tune._redis import redis_study_lock\n"
            f"with redis_study_lock({redis_url!r}, 's', lease=2):\n"
            "    print('held', flush=True); time.sleep(600)"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    time.sleep(3)  # renewed past its first lease while alive
    started = time.monotonic()
    acquired = threading.Event()

    def take() -> None:
        with redis_study_lock(redis_url, "s", lease=2):
            acquired.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert not acquired.wait(1)  # still held by the live process
    holder.kill()
    holder.wait()
    assert acquired.wait(5)
    assert time.monotonic() - started < 1 + 2 + 1


@pytest.mark.slow
def test_two_worker_processes_on_redis_stop_at_exactly_the_cap(tmp_path, redis_url):
    assert_two_workers_stop_at_the_cap(tmp_path, redis_url, "rcap")


# ------------------------------------------------------------------ Redis outage


class OwnRedis:
    """A redis-server of this test on a free port, persisted to disk (append-only file, each
    write synced), so stopping and starting it keeps the study: the machine's Redis is left
    alone."""

    def __init__(self, directory) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def own_redis(tmp_path):
    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


def test_a_finished_trial_rides_out_a_redis_outage_and_is_kept(own_redis):
    storage = make_storage(own_redis.url, outage_window=30)
    study = optuna.create_study(study_name="outage", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    own_redis.stop()
    threading.Timer(1.5, own_redis.start).start()  # back within the window
    with study_lock(own_redis.url, "outage", outage_window=30):  # the cap lock waits too
        study.tell(trial, 0.25)  # retried with backoff until Redis is back
    reloaded = optuna.load_study(study_name="outage", storage=make_storage(own_redis.url))
    [stored] = reloaded.get_trials()
    assert stored.state == TrialState.COMPLETE and stored.value == 0.25
    assert stored.params == trial.params


def test_redis_away_past_the_window_is_one_line_naming_host_and_port(own_redis):
    storage = make_storage(own_redis.url, outage_window=1)
    study = optuna.create_study(study_name="gone", storage=storage)
    trial = study.ask()
    own_redis.stop()
    for call in (lambda: study.tell(trial, 1.0),
                 lambda: study_lock(own_redis.url, "gone", outage_window=1).__enter__()):
        with pytest.raises(DatabaseOutage) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and f"127.0.0.1:{own_redis.port}" in message, message
        assert "Redis server" in message and "outage_window=1" in message
