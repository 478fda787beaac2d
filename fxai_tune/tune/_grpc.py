"""Workers through Optuna's gRPC storage proxy, and the proxy's coordination service.

``grpc://HOST:PORT[?lock_port=N]``: workers talk to `optuna.storages.GrpcStorageProxy` at
HOST:PORT, served by ``fxai-tune storage-proxy`` with `optuna.storages.run_grpc_proxy_server`.
Optuna's proxy carries the storage API only: no heartbeat and no lock. The same command
therefore serves a small coordination service on ``lock_port`` (default PORT + 1):

- ``HoldLock``: the study lock. A server stream that answers once the caller holds the lock
  and keeps it until the caller cancels the call *or its connection dies*, so a worker killed
  inside the lock frees it at once, as a database session's advisory lock does. The proxy
  takes the database's own study lock (`study_lock` on its storage URL) while a worker holds
  it, so workers behind two proxies, or connected to the database directly, exclude each other.
- ``RecordHeartbeat`` / ``StaleTrialIds``: Optuna's RDB heartbeat, run by the proxy on its
  database (the database's clock decides staleness, as for workers connected directly).

docs/scaling.md says why the lock lives there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

from fxai_tune.tune._storage import _OutageGuard, install_ride_out, ride_out

__all__ = [
    "GrpcTarget",
    "grpc_study_lock",
    "grpc_target",
    "is_loopback",
    "make_grpc_storage",
    "serve_proxy",
]

log = logging.getLogger(__name__)

_SERVICE = "fxai_tune.Coordination"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class GrpcTarget:
    """Where a ``grpc://`` storage's proxy and its coordination service listen."""

    host: str
    port: int
    lock_port: int


def grpc_target(url: str) -> GrpcTarget:
    """Split ``grpc://HOST:PORT[?lock_port=N]``.

    Raises:
        ValueError: For a URL without host or port, or an unknown query argument.
    """
    parts = urllib.parse.urlsplit(url)
    valid = "valid: grpc://HOST:PORT[?lock_port=N]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "grpc" or not parts.hostname or port is None or parts.path.strip("/"):
        raise ValueError(f"got {url!r}; {valid}")
    query = urllib.parse.parse_qs(parts.query)
    unknown = sorted(set(query) - {"lock_port"})
    if unknown:
        raise ValueError(f"unknown query argument(s) {unknown} in {url!r}; {valid}")
    lock_port = query.get("lock_port", [str(port + 1)])[-1]
    if not lock_port.isdigit() or not 1 <= int(lock_port) <= 65535:
        raise ValueError(f"lock_port must be in 1..65535, got {lock_port!r} in {url!r}")
    return GrpcTarget(host=parts.hostname, port=port, lock_port=int(lock_port))


# gRPC waits up to 120 s between reconnection attempts by default: after an outage, a worker
# would sit that long on a proxy that is back. At most 5 s, like the retry's own backoff.
_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 5000)]


def _channel(host: str, port: int) -> Any:
    import grpc

    return grpc.insecure_channel(f"{host}:{port}", options=_RECONNECT)


def _call(channel: Any, method: str, request: dict[str, Any], *, timeout: float = 30) -> Any:
    stub = channel.unary_unary(f"/{_SERVICE}/{method}")
    return json.loads(stub(json.dumps(request).encode(), timeout=timeout))


class _GrpcHeartbeatStorage(optuna.storages.GrpcStorageProxy, BaseHeartbeat):
    """`GrpcStorageProxy` whose trials beat through the proxy's coordination service and whose
    calls ride out a proxy outage of the guard's window when there is a guard."""

    _guard: _OutageGuard | None = None

    def __init__(
        self,
        target: GrpcTarget,
        *,
        heartbeat_interval: int | None,
        grace_period: int | None,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
        guard: _OutageGuard | None = None,
    ) -> None:
        self._guard = guard
        super().__init__(host=target.host, port=target.port)
        self._target = target
        self._coordination = _channel(target.host, target.lock_port)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            _call(self._coordination, "RecordHeartbeat", {"trial_id": trial_id}, timeout=10)
        except Exception as error:  # noqa: BLE001 - the heartbeat thread must live on
            log.debug("heartbeat of trial %s not recorded: %s", trial_id, error)

    def _setup(self) -> None:
        from optuna.storages._grpc.client import GrpcClientCache
        from optuna.storages._grpc.auto_generated import api_pb2_grpc

        # Optuna's own set-up, on a channel that reconnects within seconds (`_RECONNECT`)
        self._channel = _channel(self._host, self._port)
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self._guard is not None and self._guard.quiet(
            self.heartbeat_interval, self.grace_period
        ):
            return []  # no heartbeat could be written during the outage
        request = {
            "study_id": study_id,
            "interval": self.heartbeat_interval,
            "grace": self.grace_period,
        }
        stale = ride_out(self._guard, _call, self._coordination, "StaleTrialIds", request)
        return [int(i) for i in stale]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_trial_callback


def make_grpc_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    connect_timeout: float = 10,
    guard: _OutageGuard | None = None,
) -> optuna.storages.BaseStorage:
    """A `GrpcStorageProxy` on ``url`` (heartbeat through the proxy when an interval is given;
    with a ``guard`` its calls ride out a proxy outage).

    Raises:
        ValueError: For a bad URL (see `grpc_target`).
        ConnectionError: When no proxy answers within ``connect_timeout`` seconds.
    """
    target = grpc_target(url)
    with _quiet_experimental():
        storage = _GrpcHeartbeatStorage(
            target,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            stale_trial_callback=stale_trial_callback,
            guard=guard,
        )
    storage.wait_server_ready(timeout=connect_timeout)
    return storage


install_ride_out(
    _GrpcHeartbeatStorage,
    optuna.storages.GrpcStorageProxy,
    # no server call, the set-up, or a heartbeat that must never raise (its thread beats on)
    skip=frozenset({
        "close", "wait_server_ready", "record_heartbeat", "get_heartbeat_interval",
        "get_heartbeat_stale_trial_callback", "is_heartbeat_enabled", "remove_session",
    }),
)


@contextlib.contextmanager
def grpc_study_lock(
    url: str, study_name: str, *, outage_window: float | None = None
) -> Iterator[Callable[[], None]]:
    """The study lock held through the proxy's coordination service; yields a release function.

    With ``outage_window``, taking it rides out a proxy outage that long (then
    `DatabaseOutage`).

    Raises:
        ConnectionError: When the coordination service does not answer (no window).
    """
    import grpc

    target = grpc_target(url)

    def hold() -> tuple[Any, Any]:
        channel = _channel(target.host, target.lock_port)
        stream = channel.unary_stream(f"/{_SERVICE}/HoldLock")(
            json.dumps({"study": study_name}).encode()
        )
        try:
            next(stream)  # "held"
        except BaseException:
            channel.close()
            raise
        return channel, stream

    if outage_window is not None:
        channel, stream = _OutageGuard(url, outage_window).call(hold)
    else:
        try:
            channel, stream = hold()
        except grpc.RpcError as error:
            raise ConnectionError(
                f"no study lock from the storage proxy's coordination service at "
                f"{target.host}:{target.lock_port} ({error.code().name}); start it with "
                "fxai-tune storage-proxy"
            ) from None
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            stream.cancel()
            channel.close()

    try:
        yield release
    finally:
        release()


class _Coordination:
    """The coordination service's handlers (lock and heartbeat) for one database URL."""

    def __init__(self, storage_url: str) -> None:
        self.storage_url = storage_url
        self.local_locks: dict[str, threading.Lock] = {}
        self.heartbeats: dict[tuple[Any, Any], optuna.storages.BaseStorage] = {}
        self.guard = threading.Lock()

    def _local_lock(self, study: str) -> threading.Lock:
        with self.guard:
            return self.local_locks.setdefault(study, threading.Lock())

    def hold_lock(self, request: bytes, context: Any) -> Iterator[bytes]:
        from fxai_tune.tune._runner import study_lock

        study = json.loads(request)["study"]
        done = threading.Event()
        context.add_callback(done.set)  # the call ended: cancelled, or the client is gone
        local = self._local_lock(study)  # waiters queue here, not on database connections
        while not local.acquire(timeout=0.5):
            if done.is_set() or not context.is_active():
                return
        try:
            if done.is_set():
                return
            with study_lock(self.storage_url, study):
                yield b"held"
                done.wait()
        finally:
            local.release()

    def _heartbeat_storage(self, interval: Any, grace: Any) -> Any:
        from fxai_tune.tune._storage import make_storage

        with self.guard:
            key = (interval, grace)
            if key not in self.heartbeats:
                self.heartbeats[key] = make_storage(
                    self.storage_url, heartbeat_interval=interval or 1, grace_period=grace
                )
            return self.heartbeats[key]

    def record_heartbeat(self, request: bytes, context: Any) -> bytes:
        trial_id = json.loads(request)["trial_id"]
        self._heartbeat_storage(None, None).record_heartbeat(trial_id)
        return b"null"

    def stale_trial_ids(self, request: bytes, context: Any) -> bytes:
        body = json.loads(request)
        storage = self._heartbeat_storage(body["interval"], body["grace"])
        return json.dumps(storage._get_stale_trial_ids(body["study_id"])).encode()


def serve_proxy(
    storage_url: str, *, host: str = "127.0.0.1", port: int = 13000, lock_port: int | None = None
) -> None:
    """Serve ``storage_url`` with Optuna's gRPC proxy on ``port`` and the coordination service
    on ``lock_port`` (default ``port + 1``); blocks until interrupted.
    """
    import grpc

    from fxai_tune.tune._storage import make_storage, mask_password

    lock_port = port + 1 if lock_port is None else lock_port
    coordination = _Coordination(storage_url)
    handlers = {
        "HoldLock": grpc.unary_stream_rpc_method_handler(coordination.hold_lock),
        "RecordHeartbeat": grpc.unary_unary_rpc_method_handler(coordination.record_heartbeat),
        "StaleTrialIds": grpc.unary_unary_rpc_method_handler(coordination.stale_trial_ids),
    }
    # every worker waiting for the lock holds a thread here (not a database connection)
    server = grpc.server(ThreadPoolExecutor(max_workers=1024, thread_name_prefix="fxai-lock"))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    if server.add_insecure_port(f"{host}:{lock_port}") == 0:
        raise OSError(f"cannot listen on {host}:{lock_port}")
    storage = optuna.storages.get_storage(make_storage(storage_url))
    server.start()
    log.info(
        "storage proxy for %s on grpc://%s:%d (study lock and heartbeat on port %d)",
        mask_password(storage_url), host, port, lock_port,
    )
    try:
        with _quiet_experimental():
            optuna.storages.run_grpc_proxy_server(
                storage, host=host, port=port, thread_pool=ThreadPoolExecutor(max_workers=64)
            )
    finally:
        server.stop(grace=None)


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only this machine."""
    return host in _LOOPBACK or host.startswith("127.")
