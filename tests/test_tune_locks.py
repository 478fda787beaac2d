"""The study lock on PostgreSQL and MySQL (issue 12): a session-level lock on a connection
that is never idle in a transaction, a wait with a timeout and a clear error, MySQL's
GET_LOCK result checked and its name scoped to the database. On the real servers."""

from __future__ import annotations

import os
import socket
import time

import pytest
import sqlalchemy
from _tune_fixtures import POSTGRES_URL, unique_name

from fxai_tune.tune import StudyLockTimeout, normalize_storage_url, study_lock
from fxai_tune.tune._storage import _lock_name

MYSQL_URL = os.environ.get("FXAI_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _reachable(url: str) -> str:
    parsed = sqlalchemy.engine.make_url(normalize_storage_url(url))
    try:
        socket.create_connection((parsed.host, parsed.port), timeout=1).close()
    except OSError:
        pytest.skip(f"{parsed.host}:{parsed.port} does not answer")
    return url


@pytest.fixture(params=["postgresql", "mysql"])
def database(request) -> str:
    return _reachable(POSTGRES_URL if request.param == "postgresql" else MYSQL_URL)


def test_lock_excludes_a_second_holder_until_released_and_times_out_clearly(database):
    name = unique_name("lock")
    with study_lock(database, name):
        start = time.monotonic()
        with pytest.raises(StudyLockTimeout, match=rf"study lock of '{name}' .* within 1 s"):
            with study_lock(database, name, lock_timeout=1):
                pytest.fail("a second holder got the lock")
        assert 0.9 < time.monotonic() - start < 15
        with study_lock(database, unique_name("other"), lock_timeout=1):
            pass  # another study's lock is free
    with study_lock(database, name, lock_timeout=1):
        pass  # released


def _holder_state(connection: sqlalchemy.Connection, name: str) -> str | None:
    key, _ = _lock_name(POSTGRES_URL, name)
    return connection.execute(
        sqlalchemy.text(
            "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :h AND l.objid = :l"
        ),
        {"h": key >> 32, "l": key & 0xFFFFFFFF},
    ).scalar()


def test_postgres_lock_holder_is_idle_not_idle_in_transaction():
    engine = sqlalchemy.create_engine(normalize_storage_url(_reachable(POSTGRES_URL)))
    name = unique_name("idle")
    try:
        with study_lock(POSTGRES_URL, name), engine.connect() as observer:
            assert _holder_state(observer, name) == "idle"
            with pytest.raises(StudyLockTimeout, match=r"held by backend pid \d+"):
                with study_lock(POSTGRES_URL, name, lock_timeout=0.5):
                    pass
    finally:
        engine.dispose()


def test_postgres_lock_survives_idle_in_transaction_session_timeout(monkeypatch):
    """A server (or role) setting that kills sessions idle in a transaction keeps the lock."""
    _reachable(POSTGRES_URL)
    monkeypatch.setenv("PGOPTIONS", "-c idle_in_transaction_session_timeout=300")
    name = unique_name("iit")
    with study_lock(POSTGRES_URL, name):
        time.sleep(1.0)  # past the timeout: a holder idle in a transaction is gone by now
        monkeypatch.delenv("PGOPTIONS")
        with pytest.raises(StudyLockTimeout):
            with study_lock(POSTGRES_URL, name, lock_timeout=0.5):
                pass


def test_mysql_lock_name_is_scoped_to_the_database():
    one = _lock_name("mysql+pymysql://root@h/one", "demo")[1]
    two = _lock_name("mysql+pymysql://root@h/two", "demo")[1]
    assert one != two and len(one) <= 64
    assert one == _lock_name("mysql+pymysql://other@h2/one", "demo")[1]


def test_sqlite_storage_waits_a_minute_for_another_writer(tmp_path):
    """Workers sharing a SQLite file (started by `run` or elsewhere) wait 60 s for a lock,
    not sqlite3's 5 s, before "database is locked"."""
    from fxai_tune.tune import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'wait.db'}")
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60_000
