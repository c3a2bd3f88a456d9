"""Catalog database: engines, sessions and Alembic migrations.

The URL comes from settings (``VOICELOOP_CATALOG_URL``; default a SQLite file under the data
dir). :func:`connect` upgrades the schema to the newest migration on first use, so a fresh
data dir needs no manual step; ``voiceloop db upgrade`` does the same explicitly.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on '%' in passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    # WAL lets the web app read while a worker writes; busy_timeout queues writers instead of failing.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
    # pysqlite's own transaction handling emits no BEGIN before a SAVEPOINT, so releasing a savepoint
    # (session.begin_nested(), as ingest uses) would COMMIT the whole outer transaction. Take control:
    # no implicit transactions from the driver, an explicit BEGIN from SQLAlchemy (below).
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn) -> None:  # noqa: ANN001 - SQLAlchemy Connection
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads, then writes, can fail
    # at once with SQLITE_BUSY when another writer committed meanwhile; IMMEDIATE waits (busy_timeout).
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


_upgrade_lock = threading.Lock()
MIGRATION_LOCK = 0x766C6F6F70  # "vloop": one PostgreSQL advisory lock id for schema migrations


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` to ``revision`` (idempotent). On PostgreSQL, replicas starting
    together take turns (an advisory lock), so two of them never race to create the same tables."""
    with _upgrade_lock:  # alembic's `context` is process-global: one migration at a time per process
        if url.startswith("postgresql"):
            _upgrade_postgresql(url, revision)
        elif url.startswith("sqlite") and url.split(":///", 1)[-1] not in ("", ":memory:"):
            lock_path = Path(url.split(":///", 1)[-1] + ".migrate-lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with lock_path.open("a") as lock:  # other processes on this machine take turns
                fcntl.flock(lock, fcntl.LOCK_EX)
                command.upgrade(alembic_config(url), revision)
        else:
            command.upgrade(alembic_config(url), revision)


def _upgrade_postgresql(url: str, revision: str) -> None:
    cfg = alembic_config(url)
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            conn.commit()
            try:
                cfg.attributes["connection"] = conn  # env.py migrates on this connection
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


_factories: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def connect(url: str) -> sessionmaker[Session]:
    """A session factory for the catalog at ``url``, migrated to the newest schema once per process."""
    with _lock:
        if url not in _factories:
            upgrade(url)
            _factories[url] = sessionmaker(make_engine(url), expire_on_commit=False)
        return _factories[url]


def dispose(url: str) -> None:
    """Close the pooled connections of ``url``'s engine (before dropping a database)."""
    with _lock:
        factory = _factories.pop(url, None)
    if factory is not None:
        factory.kw["bind"].dispose()


IN_CHUNK = 10_000  # PostgreSQL (psycopg) takes at most 65,535 bound parameters per statement


def in_chunks(values: Iterable[str], size: int | None = None) -> Iterator[list[str]]:
    """``values`` sorted and cut into lists short enough for one ``IN (…)``. Sorted, so queries ordered by
    the same column give one ordered result when their chunks are concatenated."""
    ordered, size = sorted(set(values)), size or IN_CHUNK
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]


@contextmanager
def session_scope(url_or_factory: str | sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    factory = connect(url_or_factory) if isinstance(url_or_factory, str) else url_or_factory
    with factory() as session, session.begin():
        yield session
