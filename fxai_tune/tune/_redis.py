"""Optuna's journal storage on Redis, with a heartbeat and a study lock kept in the same Redis.

``redis://HOST:PORT/DB`` (``rediss://`` for TLS, ``?prefix=NAME`` to share a database between
projects; default prefix ``fxai-tune``). Optuna's `JournalRedisBackend` keeps the study as an
append-only log under ``PREFIX:log:*``; next to it this module keeps

- ``PREFIX:heartbeat``: a hash of trial id -> the Redis server's clock at the trial's last beat
  (one clock for all workers, as RDB storages use the database's), so a trial whose worker died
  is failed after ``grace_period`` and re-queued by `RetryHeartbeatStaleTrialCallback`;
- ``PREFIX:lock:STUDY``: the study lock (`redis_study_lock`), a lease that expires
  ``LOCK_LEASE`` seconds after its holder stops renewing it: docs/scaling.md says why.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from fxai_tune.tune._storage import _OutageGuard, ride_out

__all__ = ["LOCK_LEASE", "RedisTarget", "make_redis_storage", "redis_study_lock", "redis_target"]

DEFAULT_PREFIX = "fxai-tune"
LOCK_LEASE = 15.0
"""Seconds a study lock outlives a holder that stopped renewing it (killed, or cut off)."""


@dataclass(frozen=True)
class RedisTarget:
    """Where a ``redis://`` storage lives: the client URL (no ``prefix``) and the key prefix."""

    client_url: str
    prefix: str


def redis_target(url: str) -> RedisTarget:
    """Split a ``redis://HOST:PORT/DB[?prefix=NAME]`` URL.

    Raises:
        ValueError: For a URL without a host, a database that is not an integer, or an
            unknown query argument (the message shows no password).
    """
    parts = urllib.parse.urlsplit(url)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"got {shown!r}; valid: redis://HOST:PORT/DB[?prefix=NAME]")
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"Redis database must be an integer, got {database!r} in {shown!r}")
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise ValueError(f"bad port in {shown!r}; valid: redis://HOST:PORT/DB") from None
    query = urllib.parse.parse_qs(parts.query)
    unknown = sorted(set(query) - {"prefix"})
    if unknown:
        raise ValueError(f"unknown query argument(s) {unknown} in {shown!r}; valid: prefix")
    prefix = query.get("prefix", [DEFAULT_PREFIX])[-1]
    client = parts._replace(path=f"/{database}", query="").geturl()
    return RedisTarget(client_url=client, prefix=prefix)


class _RideOutRedisBackend(optuna.storages.journal.JournalRedisBackend):
    """`JournalRedisBackend` whose writes ride out a Redis outage (`_OutageGuard`).

    Each log is appended by one atomic script, so a retried append never writes a log twice
    unless Redis ran it and died before answering. Reads are retried by the storage's
    `_sync_with_backend`, which resumes after the last log it applied.
    """

    _guard: _OutageGuard | None = None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        for log in logs:
            ride_out(self._guard, super().append_logs, [log])

    def save_snapshot(self, snapshot: bytes) -> None:
        ride_out(self._guard, super().save_snapshot, snapshot)


class _RedisJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """`JournalStorage` on Redis whose trials beat into a Redis hash (Optuna's journal has
    no heartbeat), riding out a Redis outage of the guard's window when there is a guard."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        heartbeat_interval: int | None,
        grace_period: int | None,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
        guard: _OutageGuard | None = None,
    ) -> None:
        import redis

        backend = _RideOutRedisBackend(target.client_url, prefix=target.prefix)
        backend._guard = guard
        self._guard = guard
        super().__init__(backend)
        self._target = target
        self._client = redis.Redis.from_url(target.client_url)
        self._heartbeat_key = f"{target.prefix}:heartbeat"
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_client", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        import redis

        super().__setstate__(state)
        self._client = redis.Redis.from_url(self._target.client_url)

    def _server_time(self) -> float:
        seconds, micros = self._client.time()
        return seconds + micros / 1e6

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self._client.hset(self._heartbeat_key, str(trial_id), repr(self._server_time()))
        except Exception:  # noqa: BLE001 - the heartbeat thread must live on; it beats again
            pass

    def _sync_with_backend(self) -> None:
        ride_out(self._guard, super()._sync_with_backend)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self._guard is not None and self._guard.quiet(
            self.heartbeat_interval, self.grace_period
        ):
            return []  # no heartbeat could be written during the outage
        interval = self.heartbeat_interval or 0
        grace = self.grace_period or 2 * interval
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return []
        ids = [str(t._trial_id) for t in running]
        beats = ride_out(self._guard, self._client.hmget, self._heartbeat_key, ids)
        now = ride_out(self._guard, self._server_time)
        return [
            int(trial_id)
            for trial_id, beat in zip(ids, beats, strict=True)
            if beat is not None and now - float(beat) > grace
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_trial_callback


def make_redis_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    guard: _OutageGuard | None = None,
) -> BaseStorage:
    """Optuna's journal storage on the Redis of ``url``, with a heartbeat when an interval is
    given; with a ``guard`` its calls ride out a Redis outage. Connects once (``PING``), so an
    unreachable server fails here.

    Raises:
        ValueError: For a bad URL (see `redis_target`).
        redis.exceptions.RedisError: When the server cannot be reached.
    """
    import redis

    target = redis_target(url)
    redis.Redis.from_url(target.client_url).ping()
    return _RedisJournalStorage(
        target,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        stale_trial_callback=stale_trial_callback,
        guard=guard,
    )


@contextlib.contextmanager
def redis_study_lock(
    url: str,
    study_name: str,
    *,
    lease: float = LOCK_LEASE,
    outage_window: float | None = None,
) -> Iterator[Callable[[], None]]:
    """The study-wide lock on Redis: yields a function that releases it early.

    A `redis.lock.Lock` lease of ``lease`` seconds that a daemon thread renews every third of
    it while held: a holder that is killed frees the study within ``lease`` seconds; a live
    holder keeps the lock however long its step takes. With ``outage_window``, taking it rides
    out a Redis outage that long (then `DatabaseOutage`).
    """
    import redis

    target = redis_target(url)
    client = redis.Redis.from_url(target.client_url)
    lock = client.lock(
        f"{target.prefix}:lock:{study_name}", timeout=lease, sleep=0.02, thread_local=False
    )
    guard = None if outage_window is None else _OutageGuard(url, outage_window)
    ride_out(guard, lock.acquire, blocking=True)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease / 3):
            with contextlib.suppress(redis.exceptions.RedisError):
                lock.reacquire()

    renewer = threading.Thread(target=renew, name="fxai-redis-lock", daemon=True)
    renewer.start()
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        stop.set()
        with contextlib.suppress(redis.exceptions.LockError, redis.exceptions.RedisError):
            lock.release()
        client.close()

    try:
        yield release
    finally:
        release()
