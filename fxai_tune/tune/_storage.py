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

RDB storages get Optuna's heartbeat when ``heartbeat_interval`` is given: a trial whose worker
stopped beating for ``grace_period`` seconds is failed by the next worker and re-queued with the
same parameters by `optuna.storages.RetryHeartbeatStaleTrialCallback` (the Optuna 5 name; the
``failed_trial_callback`` argument and ``RetryFailedTrialCallback`` are deprecated since 4.9).
Optuna's journal storage has no heartbeat, so the heartbeat arguments are ignored there.

Passwords never appear in messages: use `mask_password` on anything that shows a URL.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

__all__ = [
    "STORAGE_SCHEMES",
    "StorageError",
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
)
JOURNAL_SUFFIXES = (".log", ".jsonl")
_VALID = f"valid: {', '.join(STORAGE_SCHEMES)} URLs or a path ending in .log/.jsonl"
_PASSWORD_IN_TEXT = re.compile(r"(://[^\s:/@]*:)([^\s@]*)(@)")


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
    """``"sqlite"``, ``"postgresql"``, ``"mysql"`` or ``"journal"``.

    Raises:
        StorageError: For an unknown scheme or an unparsable URL.
    """
    if journal_path(url) is not None:
        return "journal"
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
    parsed = _parse(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername=f"postgresql+{_pick_driver(('psycopg2', 'psycopg'))}")
    elif parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
    else:
        return url
    return parsed.render_as_string(hide_password=False)


def make_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    n_workers: int = 1,
    max_retry: int | None = 3,
) -> optuna.storages.BaseStorage:
    """Open (creating tables or the file when needed) the Optuna storage at ``url``.

    Args:
        url: See the module docstring for the accepted forms.
        heartbeat_interval: Seconds between a running trial's heartbeats (RDB only); None
            disables the heartbeat and the retry of stale trials.
        grace_period: Seconds without a heartbeat after which a trial is failed; None is
            Optuna's default (2 x heartbeat_interval).
        n_workers: Processes that will share the storage; with SQLite and more than one, the
            connection waits up to 60 s for a lock instead of 5 s.
        max_retry: Times a heartbeat-stale trial is re-queued (None: without limit).

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

    normalized = normalize_storage_url(url)
    parsed = make_url(normalized)
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        if n_workers > 1:
            engine_kwargs["connect_args"] = {"timeout": 60}
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
            return optuna.storages.RDBStorage(
                normalized, engine_kwargs=engine_kwargs, **heartbeat
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, ValueError) as error:
        detail = _first_line(error)
        if parsed.password:
            detail = detail.replace(parsed.password, "***")
        raise StorageError(f"cannot open storage {masked!r}: {mask_password(detail)}") from None


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
    return StorageError(
        f"cannot reach storage {mask_password(url)!r} at {where}: {mask_password(detail)}; "
        "check that the server runs there and the user, password and database are right"
    )


def check_storage_reachable(url: str) -> None:
    """Connect to an RDB storage once (``SELECT 1``) without creating anything.

    SQLite and journal files are checked by their directory: it must exist or be creatable.

    Raises:
        StorageError: One line with host and port and the password masked.
    """
    backend = storage_backend(url)
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
    if backend == "sqlite":
        database = make_url(normalize_storage_url(url)).database
        if not database or database == ":memory:":
            return None, []
        path = Path(database).expanduser()
    if path is not None and not path.is_file():
        return None, []
    if backend in ("postgresql", "mysql"):
        import sqlalchemy.pool

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
