"""Optuna storages from URLs: SQLite, PostgreSQL, MySQL/MariaDB and journal files.

Accepted forms (``STORAGE_SCHEMES``):

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
- ``postgresql://user:password@host:5432/db`` (driver psycopg2, else psycopg, when none is given),
  ``postgresql+psycopg2://...``, ``postgresql+psycopg://...``
- ``mysql://user@host:3306/db`` (driver pymysql when none is given), ``mysql+pymysql://...``,
  ``mariadb://...`` (likewise), ``mariadb+pymysql://...``
- ``journal:///absolute/path/study.log`` (everything after ``journal://`` is the path, so
  ``journal://relative.log`` is relative), or a plain path ending in ``.log`` or ``.jsonl``:
  Optuna's `JournalStorage` on a `JournalFileBackend`.
- ``redis://HOST:PORT/DB[?prefix=NAME]`` (``rediss://`` with TLS): Optuna's `JournalStorage` on a
  `JournalRedisBackend`, with a heartbeat kept in the same Redis (`fxai_tune.tune._redis`).
- ``grpc://HOST:PORT[?lock_port=N]``: Optuna's `GrpcStorageProxy` to a ``fxai-tune
  storage-proxy``, whose coordination service holds the study lock and heartbeat
  (`fxai_tune.tune._grpc`).

RDB storages get Optuna's heartbeat when ``heartbeat_interval`` is given: a trial whose worker
stopped beating for ``grace_period`` seconds is failed by the next worker and re-queued with the
same parameters by `optuna.storages.RetryHeartbeatStaleTrialCallback` (the Optuna 5 name; the
``failed_trial_callback`` argument and ``RetryFailedTrialCallback`` are deprecated since 4.9).
Optuna's journal storage has no heartbeat, so the heartbeat arguments are ignored there.

Passwords never appear in messages: use `mask_password` on anything that shows a URL.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import logging
import math
import re
import tempfile
import urllib.parse
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

__all__ = [
    "STORAGE_SCHEMES",
    "STUDY_LOCK_TIMEOUT",
    "DatabaseOutage",
    "StorageError",
    "StudyLockError",
    "StudyLockTimeout",
    "advisory_lock",
    "check_storage_for_workers",
    "check_storage_reachable",
    "find_study",
    "journal_path",
    "make_storage",
    "mask_password",
    "normalize_storage_url",
    "storage_backend",
]

STORAGE_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgresql+psycopg2",
    "postgresql+psycopg",
    "mysql",
    "mysql+pymysql",
    "mariadb",
    "mariadb+pymysql",
    "journal",
    "redis",
    "rediss",
    "grpc",
)
JOURNAL_SUFFIXES = (".log", ".jsonl")
_VALID = f"valid: {', '.join(STORAGE_SCHEMES)} URLs or a path ending in .log/.jsonl"
_PASSWORD_IN_TEXT = re.compile(r"(://[^\s:/@]*:)([^\s@]*)(@)")


_log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT = 60.0
"""Seconds a SQLite connection waits for another process's write lock ("database is
locked" after that)."""


class StorageError(ValueError):
    """A storage URL that cannot be used; the message is one line with the password masked."""


def mask_password(url: str) -> str:
    """``url`` (or any text holding URLs) with passwords replaced by ``***``.

    Example:
        >>> mask_password("postgresql://bob:secret@db:5432/optuna")
        'postgresql://bob:***@db:5432/optuna'
    """
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        parsed = None
    if parsed is not None and parsed.password is not None:
        return parsed.render_as_string(hide_password=True)
    return _PASSWORD_IN_TEXT.sub(r"\1***\3", url)


def journal_path(url: str) -> Path | None:
    """The file of a journal storage URL or path; None for anything else."""
    if url.startswith("journal://"):
        return Path(url.removeprefix("journal://")).expanduser()
    if "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        return Path(url).expanduser()
    return None


def _remote_backend(url: str) -> str | None:
    """``"redis"`` or ``"grpc"`` for those URLs, else None (not SQLAlchemy URLs)."""
    if url.startswith(("redis://", "rediss://")):
        return "redis"
    if url.startswith("grpc://"):
        return "grpc"
    return None


def _check_remote(url: str) -> None:
    from fxai_tune.tune._grpc import grpc_target
    from fxai_tune.tune._redis import redis_target

    try:
        (grpc_target if _remote_backend(url) == "grpc" else redis_target)(url)
    except ValueError as error:
        raise StorageError(f"storage {mask_password(url)!r}: {error}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _parse(url: str) -> URL:
    masked = mask_password(url)
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise StorageError(
            f"storage {masked!r} is not a valid URL ({mask_password(_first_line(error))}); "
            f"{_VALID}"
        ) from None
    if parsed.drivername not in STORAGE_SCHEMES or parsed.drivername == "journal":
        raise StorageError(
            f"storage {masked!r} has unknown scheme {parsed.drivername!r}; {_VALID}"
        )
    return parsed


def storage_backend(url: str) -> str:
    """``"sqlite"``, ``"postgresql"``, ``"mysql"``, ``"journal"``, ``"redis"`` or ``"grpc"``.

    Raises:
        StorageError: For an unknown scheme or an unparsable URL.
    """
    if journal_path(url) is not None:
        return "journal"
    remote = _remote_backend(url)
    if remote is not None:
        _check_remote(url)
        return remote
    backend = _parse(url).get_backend_name()
    return "mysql" if backend == "mariadb" else backend


def _pick_driver(candidates: tuple[str, ...]) -> str:
    for driver in candidates:
        if importlib.util.find_spec(driver) is not None:
            return driver
    return candidates[0]


def normalize_storage_url(url: str) -> str:
    """The URL with an explicit, installed driver (``postgresql+psycopg2://``,
    ``mysql+pymysql://``); journal URLs and paths are returned as given.

    SQLAlchemy 2.1 picks psycopg (3) for a bare ``postgresql://`` and MySQLdb for ``mysql://``;
    this project ships psycopg2 and PyMySQL, so URLs without a driver get those.

    Raises:
        StorageError: For an unknown scheme or an unparsable URL.
    """
    if journal_path(url) is not None:
        return url
    if _remote_backend(url) is not None:
        _check_remote(url)
        return url
    parsed = _parse(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername=f"postgresql+{_pick_driver(('psycopg2', 'psycopg'))}")
    elif parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
    else:
        return url
    return parsed.render_as_string(hide_password=False)


class DatabaseOutage(RuntimeError):
    """The database stayed unreachable for longer than the study's ``outage_window``."""


def _is_outage(error: BaseException, backend: str = "rdb") -> BaseException | None:
    """The lost or refused connection behind ``error`` (to the database, Redis or the gRPC
    proxy as ``backend`` says), or None.

    Optuna wraps a database's in a `StorageInternalError` that blames "invalid data in the
    commit"; Redis raises `ConnectionError`/`TimeoutError` (`BusyLoadingError` while it
    reloads its data after a restart); a gRPC call to a proxy that is away ends UNAVAILABLE.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if backend == "redis":
            import redis

            unreachable = redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
            if isinstance(current, unreachable):
                return current
        elif backend == "grpc":
            import grpc

            code = getattr(current, "code", None)  # calls' errors have one, bare RpcError not
            if isinstance(current, grpc.RpcError) and callable(code) and code() in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
            ):
                return current
        elif isinstance(current, sqlalchemy.exc.DBAPIError) and (
            current.connection_invalidated
            or isinstance(current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
        ):
            return current
        elif type(current).__name__ in ("OperationalError", "InterfaceError") and (
            "sqlite" not in type(current).__module__
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


_SERVER_NAMES = {"rdb": "database", "redis": "Redis server", "grpc": "storage proxy"}


class _OutageGuard:
    """Retries with backoff while the storage's server is away, for up to ``window`` seconds.

    One guard serves PostgreSQL/MySQL, Redis and the gRPC proxy (``backend``: which errors
    mean "unreachable", `_is_outage`). One outage is one window: calls during it share the
    deadline; the first success ends it. Past the window every call fails at once with
    `DatabaseOutage` (one line naming host and port), so a worker stops instead of waiting a
    window per call.
    """

    def __init__(self, url: str, window: float) -> None:
        remote = _remote_backend(url)
        self.backend = remote or "rdb"
        if remote is None:
            parsed = make_url(normalize_storage_url(url))
            self.where = f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
        else:
            split = urllib.parse.urlsplit(url)
            self.where = f"{split.hostname}:{split.port or 6379}"
        self.server = _SERVER_NAMES[self.backend]
        self.masked = mask_password(url)
        self.window = window
        self.deadline: float | None = None
        self.recovered_at = -math.inf
        self.gave_up = False
        self.pending: list[tuple[Any, tuple[Any, ...]]] = []
        self.flushing = threading.local()
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("lock", "flushing")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.Lock(), flushing=threading.local())

    def message(self) -> str:
        return (
            f"the {self.server} at {self.where} ({self.masked}) was unreachable for more than "
            f"outage_window={self.window:g} s; start it again and rerun the same command: "
            "the trials left running are failed as stale and re-run"
        )

    def quiet(self, heartbeat_interval: float | None, grace_period: float | None) -> bool:
        """Whether heartbeats may be missing for the outage: during it, and for a grace period
        after it in which live trials beat again; no trial counts as stale then."""
        interval = heartbeat_interval or 0
        grace = (grace_period or 2 * interval) + 2 * interval
        return self.deadline is not None or time.monotonic() - self.recovered_at < grace

    def away(self) -> bool:
        """Whether the server is away, or calls deferred during its absence are still queued."""
        return self.deadline is not None or bool(self.pending)

    def defer(self, function: Any, *args: Any) -> None:
        """``function(*args)`` now if the server answers; while it is away, queued (in order)
        for the next `call`, which makes them first, and this returns at once.

        For a trial's intermediate reports: training goes on while the database is away
        (issue 11). Queued calls past the window are lost with the trial, which is re-run.
        """
        with self.lock:
            if self.deadline is not None or self.pending:
                self.pending.append((function, args))
                return
        try:
            function(*args)
        except Exception as error:
            cause = _is_outage(error, self.backend)
            if cause is None:
                raise
            self._outage_began(cause)
            with self.lock:
                self.pending.append((function, args))

    def _outage_began(self, cause: BaseException) -> float:
        """The deadline of the outage ``cause`` belongs to (starting it if it is new)."""
        with self.lock:
            if self.deadline is None:
                self.deadline = time.monotonic() + self.window
                _log.warning(
                    "%s at %s unreachable (%s); retrying for up to %g s",
                    self.server, self.where, mask_password(_first_line(cause)), self.window,
                )
            return self.deadline

    def _flush(self) -> None:
        """Make the deferred calls, oldest first (an outage error leaves the rest queued).

        Not from within a deferred call: it calls other guarded methods of the storage."""
        if getattr(self.flushing, "active", False):
            return
        self.flushing.active = True
        try:
            self._flush_pending()
        finally:
            self.flushing.active = False

    def _flush_pending(self) -> None:
        while True:
            with self.lock:
                if not self.pending:
                    return
                function, args = self.pending[0]
            try:
                function(*args)  # a repeat (two threads flushing) rewrites the same value
            except Exception as error:
                if _is_outage(error, self.backend) is not None:
                    raise
                # not the server's absence (e.g. the trial was finished meanwhile): drop it
                _log.warning("deferred storage call dropped: %s", _first_line(error))
            with self.lock:
                if self.pending and self.pending[0][0] is function and self.pending[0][1] is args:
                    self.pending.pop(0)

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        delay = 0.5
        while True:
            if self.gave_up:
                raise DatabaseOutage(self.message())
            try:
                self._flush()
                result = function(*args, **kwargs)
            except Exception as error:
                cause = _is_outage(error, self.backend)
                if cause is None:
                    raise
                now = time.monotonic()
                deadline = self._outage_began(cause)
                if now >= deadline:
                    self.gave_up = True
                    raise DatabaseOutage(self.message()) from None
                time.sleep(min(delay, deadline - now))
                delay = min(2 * delay, 5.0)
                continue
            if self.deadline is not None:
                with self.lock:
                    if self.deadline is not None:
                        _log.warning("%s at %s reachable again", self.server, self.where)
                        self.deadline = None
                        self.recovered_at = time.monotonic()
            return result


def ride_out(guard: _OutageGuard | None, function: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, through ``guard`` when there is one."""
    if guard is None:
        return function(*args, **kwargs)
    return guard.call(function, *args, **kwargs)


def install_ride_out(
    cls: type, base: type, *, skip: frozenset[str], private: frozenset[str] = frozenset()
) -> None:
    """Give ``cls`` a version of each public method of ``base`` (but ``skip``), and of the
    ``private`` ones, that calls it through the instance's ``_guard`` (`_OutageGuard`, or
    None for plain calls)."""
    for name in dir(base):
        public = not name.startswith("_") and name not in skip
        if not (public or name in private) or not callable(getattr(base, name)):
            continue
        if isinstance(inspect.getattr_static(base, name), staticmethod | classmethod):
            continue
        method = getattr(base, name)

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, __method: Any = method, **kwargs: Any) -> Any:
            return ride_out(self._guard, __method, self, *args, **kwargs)

        setattr(cls, name, wrapper)


# RDBStorage methods that never touch the database, or run once at construction
_NOT_RETRIED = frozenset({
    "get_heartbeat_interval", "get_failed_trial_callback", "get_heartbeat_stale_trial_callback",
    "remove_session", "upgrade", "get_current_version", "get_head_version",
    "get_all_versions", "is_heartbeat_enabled",
})


class _RideOutRDBStorage(optuna.storages.RDBStorage):
    """`optuna.storages.RDBStorage` whose calls ride out a database outage (`_OutageGuard`).

    The heartbeat never raises: its thread must survive the outage (issue 11), and a trial
    whose heartbeats stopped for good is failed as stale by the next worker anyway.
    """

    _guard: _OutageGuard | None = None

    def record_heartbeat(self, trial_id: int) -> None:
        # one try: the thread beats again in heartbeat_interval seconds
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:  # noqa: BLE001 - the thread must live on
            _log.debug("heartbeat of trial %s not recorded: %s", trial_id, _first_line(error))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # no heartbeat could be written during an outage: give live trials a grace period
        # after it to beat again before any of them counts as stale
        if self._guard.quiet(self.heartbeat_interval, self.grace_period):
            return []
        return self._guard.call(super()._get_stale_trial_ids, study_id)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        # a validation's report never stops training: queued while the database is away,
        # written before the next call that reaches it (the trial's tell at the latest)
        self._guard.defer(
            super().set_trial_intermediate_value, trial_id, step, intermediate_value
        )


install_ride_out(
    _RideOutRDBStorage,
    optuna.storages.RDBStorage,
    skip=_NOT_RETRIED | {"record_heartbeat", "set_trial_intermediate_value"},
    # what Optuna's `_CachedStorage`, in front of every RDB storage, calls instead of the
    # public methods: ask, suggest_*, get_trials, best_trial
    private=frozenset({"_create_new_trial", "_set_trial_param", "_get_trials",
                       "_get_best_trial_id"}),
)


def storage_unreachable(storage: optuna.storages.BaseStorage) -> bool:
    """Whether ``storage`` (or the one Optuna's cache wraps) is riding out an outage now."""
    inner = getattr(storage, "_backend", storage)  # Optuna's `_CachedStorage` wraps RDB ones
    guard = getattr(inner, "_guard", None)
    return isinstance(guard, _OutageGuard) and guard.away()


def make_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    outage_window: float | None = None,
) -> optuna.storages.BaseStorage:
    """Open (creating tables or the file when needed) the Optuna storage at ``url``.

    Args:
        url: See the module docstring for the accepted forms.
        heartbeat_interval: Seconds between a running trial's heartbeats (RDB only); None
            disables the heartbeat and the retry of stale trials.
        grace_period: Seconds without a heartbeat after which a trial is failed; None is
            Optuna's default (2 x heartbeat_interval).
        max_retry: Times a heartbeat-stale trial is re-queued (None: without limit).
        outage_window: Seconds a PostgreSQL/MySQL, Redis or gRPC-proxy storage retries its
            calls (with backoff) while its server is unreachable, before `DatabaseOutage`;
            None: no retries.

    Returns:
        An `optuna.storages.RDBStorage` or `optuna.storages.JournalStorage`.

    Raises:
        StorageError: For a bad URL or a database that cannot be opened (password masked).

    Example:
        >>> storage = make_storage("sqlite:///:memory:")
        >>> type(storage).__name__
        'RDBStorage'
    """
    masked = mask_password(url)
    path = journal_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as error:
            raise StorageError(f"cannot open journal file {str(path)!r}: {error}") from None
        return optuna.storages.JournalStorage(backend)
    if storage_backend(url) in ("redis", "grpc"):
        make = _make_redis if storage_backend(url) == "redis" else _make_grpc
        stale_retry = _stale_retry(max_retry) if heartbeat_interval is not None else None
        guard = None if outage_window is None else _OutageGuard(url, outage_window)
        return make(url, heartbeat_interval, grace_period, stale_retry, guard)

    normalized = normalize_storage_url(url)
    parsed = make_url(normalized)
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # any number of workers (here or started elsewhere) may share the file: a write waits
        # up to SQLITE_BUSY_TIMEOUT s for another's lock instead of sqlite3's 5 s
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    try:
        with warnings.catch_warnings():
            # the heartbeat and its retry callback are still flagged experimental in Optuna 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat: dict[str, Any] = {}
            if heartbeat_interval is not None:
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                heartbeat = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period,
                    "heartbeat_stale_trial_callback": retry,
                }
            if outage_window is None or parsed.get_backend_name() == "sqlite":
                return optuna.storages.RDBStorage(
                    normalized, engine_kwargs=engine_kwargs, **heartbeat
                )
            # a pooled connection the restart killed is tested and replaced before use
            engine_kwargs.update(
                pool_pre_ping=True, connect_args=_connect_args(storage_backend(url))
            )
            guard = _OutageGuard(url, outage_window)
            storage = guard.call(
                _RideOutRDBStorage, normalized, engine_kwargs=engine_kwargs, **heartbeat
            )
            storage._guard = guard
            return storage
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, ValueError) as error:
        detail = _first_line(error)
        if parsed.password:
            detail = detail.replace(parsed.password, "***")
        raise StorageError(f"cannot open storage {masked!r}: {mask_password(detail)}") from None


def _stale_retry(max_retry: int | None) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def _make_redis(
    url: str,
    heartbeat_interval: int | None,
    grace_period: int | None,
    stale_retry: Any,
    guard: _OutageGuard | None,
) -> optuna.storages.BaseStorage:
    import redis

    from fxai_tune.tune._redis import make_redis_storage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return ride_out(
                guard,
                make_redis_storage,
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                stale_trial_callback=stale_retry,
                guard=guard,
            )
    except redis.exceptions.RedisError as error:
        raise _unreachable(url, error) from None


def _make_grpc(
    url: str,
    heartbeat_interval: int | None,
    grace_period: int | None,
    stale_retry: Any,
    guard: _OutageGuard | None,
) -> optuna.storages.BaseStorage:
    from fxai_tune.tune._grpc import make_grpc_storage

    try:
        return make_grpc_storage(
            url,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            stale_trial_callback=stale_retry,
            guard=guard,
        )
    except ConnectionError as error:
        raise _unreachable(url, error) from None


def check_storage_for_workers(url: str, n_workers: int) -> str | None:
    """A warning to show when ``n_workers`` processes would share ``url``; None if fine.

    Several workers on one SQLite file serialise every write behind one file lock and can
    hit "database is locked"; PostgreSQL or a journal file scale better.

    Raises:
        StorageError: For an unknown scheme or an unparsable URL.
    """
    if n_workers <= 1 or storage_backend(url) != "sqlite":
        return None
    database = make_url(normalize_storage_url(url)).database or ":memory:"
    stem = Path(database).with_suffix("").name or "study"
    return (
        f"{n_workers} workers will share the SQLite file {database!r}: SQLite serialises "
        "writes and may fail with 'database is locked'. For parallel workers use PostgreSQL "
        f"(--storage postgresql://USER@HOST:5432/DB) or a journal file "
        f"(--storage journal:///ABSOLUTE/PATH/{stem}.log)."
    )


def _connect_args(backend: str) -> dict[str, Any]:
    """Driver arguments that make an unreachable server fail in seconds, not minutes."""
    return {"connect_timeout": 10} if backend in ("postgresql", "mysql") else {}


def _unreachable(url: str, error: BaseException) -> StorageError:
    parsed = make_url(normalize_storage_url(url))
    detail = _first_line(error)
    if parsed.password:
        detail = detail.replace(parsed.password, "***")
    where = f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
    hint = "check that the server runs there and the user, password and database are right"
    if _remote_backend(url) is not None:
        split = urllib.parse.urlsplit(url)
        where = f"{split.hostname}:{split.port or 'default port'}"
    if _remote_backend(url) == "grpc":
        hint = "check that `fxai-tune storage-proxy` runs there"
    return StorageError(
        f"cannot reach storage {mask_password(url)!r} at {where}: {mask_password(detail)}; "
        + hint
    )


def check_storage_reachable(url: str) -> None:
    """Connect to an RDB storage once (``SELECT 1``) without creating anything.

    SQLite and journal files are checked by their directory: it must exist or be creatable.

    Raises:
        StorageError: One line with host and port and the password masked.
    """
    backend = storage_backend(url)
    if backend == "grpc":
        make_storage(url).close()
        return
    if backend == "redis":
        import redis

        from fxai_tune.tune._redis import redis_target

        client = redis.Redis.from_url(redis_target(url).client_url, socket_connect_timeout=10)
        try:
            client.ping()
        except redis.exceptions.RedisError as error:
            raise _unreachable(url, error) from None
        finally:
            client.close()
        return
    if backend in ("postgresql", "mysql"):
        import sqlalchemy.pool

        engine = sqlalchemy.create_engine(
            normalize_storage_url(url),
            poolclass=sqlalchemy.pool.NullPool,
            connect_args=_connect_args(backend),
        )
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError) as error:
            raise _unreachable(url, error) from None
        finally:
            engine.dispose()
        return
    path = journal_path(url)
    if path is None:
        database = make_url(normalize_storage_url(url)).database
        if not database or database == ":memory:" or database.startswith("file:"):
            return
        path = Path(database).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".fxai-write-check-"):
            pass
    except OSError as error:
        raise StorageError(
            f"storage {mask_password(url)!r}: cannot write in {str(path.parent)!r} "
            f"({error.strerror or error}); valid: a file in a directory this user can write"
        ) from None


def find_study(url: str, name: str) -> tuple[optuna.Study | None, list[str]]:
    """The stored study ``name`` (None if absent) and the names of the stored studies.

    Creates nothing: a missing SQLite or journal file, or a database without Optuna's
    tables, holds no study.

    Raises:
        StorageError: When the storage cannot be reached or read.
    """
    backend = storage_backend(url)
    path = journal_path(url)
    if backend in ("redis", "grpc"):
        check_storage_reachable(url)
    if backend == "sqlite":
        database = make_url(normalize_storage_url(url)).database
        if not database or database == ":memory:":
            return None, []
        path = Path(database).expanduser()
    if path is not None and not path.is_file():
        return None, []
    if backend in ("sqlite", "postgresql", "mysql"):  # Optuna would create its tables
        import sqlalchemy.pool

        if backend != "sqlite":
            check_storage_reachable(url)
        engine = sqlalchemy.create_engine(
            normalize_storage_url(url),
            poolclass=sqlalchemy.pool.NullPool,
            connect_args=_connect_args(backend),
        )
        try:
            has_tables = sqlalchemy.inspect(engine).has_table("studies")
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise _unreachable(url, error) from None
        finally:
            engine.dispose()
        if not has_tables:
            return None, []
    storage = make_storage(url)
    try:
        names = [s.study_name for s in storage.get_all_studies()]
        if name not in names:
            return None, names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.load_study(study_name=name, storage=storage), names
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as error:
        raise StorageError(
            f"cannot read storage {mask_password(url)!r}: {mask_password(_first_line(error))}"
        ) from None


STUDY_LOCK_TIMEOUT = 120.0
"""Seconds a worker waits for the study lock; it is held only while a trial is created, so
a longer wait means a holder that froze (a stopped host keeps its connection open)."""


class StudyLockError(RuntimeError):
    """The database could not take the study lock (MySQL's GET_LOCK returned NULL)."""


class StudyLockTimeout(StudyLockError):
    """The study lock was not obtained in time; the message names who holds it."""


def _lock_name(url: str, study_name: str) -> tuple[int, str]:
    """The PostgreSQL advisory key (per database by PostgreSQL's own scoping) and the MySQL
    lock name of a study; MySQL names are server-wide, so the database is part of it."""
    key = int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:7], "big")
    database = make_url(normalize_storage_url(url)).database or ""
    scoped = hashlib.sha1(f"{database}\0{study_name}".encode()).hexdigest()
    return key, f"fxai_tune.{scoped}"  # <= 64 characters, MySQL's limit


def _is_lock_timeout(error: BaseException) -> bool:
    """PostgreSQL's lock_not_available (55P03): ``lock_timeout`` expired."""
    orig = getattr(error, "orig", None)
    return "55P03" in (getattr(orig, "pgcode", None), getattr(orig, "sqlstate", None))


def _pg_holder(connection: Any, key: int) -> str:
    """`` (held by backend PID from ADDR, state S)`` for the session holding advisory ``key``."""
    import sqlalchemy

    try:
        row = connection.execute(
            sqlalchemy.text(
                "SELECT a.pid, a.client_addr, a.state FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.classid = :high AND l.objid = :low AND l.objsubid = 1"
            ),
            {"high": key >> 32, "low": key & 0xFFFFFFFF},
        ).first()
    except sqlalchemy.exc.SQLAlchemyError:
        return ""
    if row is None:
        return ""
    return f" (held by backend pid {row.pid} from {row.client_addr or 'a local socket'}, " \
        f"state {row.state!r})"


@contextlib.contextmanager
def advisory_lock(
    url: str,
    study_name: str,
    *,
    timeout: float = STUDY_LOCK_TIMEOUT,
    outage_window: float | None = None,
) -> Iterator[Callable[[], None]]:
    """A session-level PostgreSQL/MySQL lock on study ``study_name``; yields its release.

    The connection runs in autocommit, so it never sits "idle in transaction" while the lock
    is held (``idle_in_transaction_session_timeout`` would drop it, and the lock with it).
    PostgreSQL: ``pg_advisory_lock`` under ``lock_timeout``; MySQL: ``GET_LOCK`` with a
    timeout, whose result is checked (1 taken, 0 timeout, NULL error). A transaction-pooling
    proxy (PgBouncer ``pool_mode=transaction``) cannot carry a session lock: connect the
    workers to the server or a session-pooling proxy.

    Args:
        url: PostgreSQL or MySQL storage URL.
        study_name: The study locked.
        timeout: Seconds to wait for the lock before `StudyLockTimeout`.
        outage_window: Seconds to ride out an unreachable database (None: fail at once).

    Raises:
        StudyLockTimeout: Not obtained within ``timeout`` (names the holder on PostgreSQL).
        DatabaseOutage: The database stayed away for longer than ``outage_window``.
    """
    import sqlalchemy.pool

    backend = storage_backend(url)
    if backend not in ("postgresql", "mysql"):
        raise ValueError(f"advisory locks need a PostgreSQL or MySQL URL, got {backend=}")
    postgres = backend == "postgresql"
    key, name = _lock_name(url, study_name)
    engine = sqlalchemy.create_engine(
        normalize_storage_url(url),
        poolclass=sqlalchemy.pool.NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args=_connect_args(backend),
    )
    text = sqlalchemy.text

    def lock() -> tuple[sqlalchemy.engine.Connection | None, str]:
        """The connection holding the lock, or None and who holds it when the wait ended."""
        connection = engine.connect()
        try:
            if postgres:
                connection.execute(
                    text("SELECT set_config('lock_timeout', :ms, false)"),
                    {"ms": f"{max(1, round(timeout * 1000))}ms"},
                )
                try:
                    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                    return connection, ""
                except sqlalchemy.exc.OperationalError as error:
                    if not _is_lock_timeout(error):
                        raise
                # raised outside the handler: its context is not taken for an outage
            else:
                got = connection.execute(
                    text("SELECT GET_LOCK(:n, :t)"), {"n": name, "t": max(0, math.ceil(timeout))}
                ).scalar()
                if got == 1:
                    return connection, ""
                if got is None:
                    raise StudyLockError(
                        f"GET_LOCK({name!r}) failed on {mask_password(url)} (NULL: the server "
                        "could not take the lock, e.g. out of memory or the thread was killed)"
                    )
        except BaseException:
            connection.close()
            raise
        holder = _pg_holder(connection, key) if postgres else ""
        connection.close()
        return None, holder

    try:
        connection, holder = (
            lock() if outage_window is None else _OutageGuard(url, outage_window).call(lock)
        )
    except BaseException:
        engine.dispose()
        raise
    if connection is None:
        engine.dispose()
        raise StudyLockTimeout(
            f"the study lock of {study_name!r} on {mask_password(url)} was not free within "
            f"{timeout:g} s{holder}: a worker froze while holding it (it is held only "
            "while a trial is created); stop or restart that worker, or end its session"
        )
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        try:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            else:
                connection.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
            connection.close()
        except sqlalchemy.exc.SQLAlchemyError as error:  # lost with the connection
            _log.warning("study lock not released (%s): the server dropped it", error)
        finally:
            engine.dispose()

    try:
        yield release
    finally:
        release()
