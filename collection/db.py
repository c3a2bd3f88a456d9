"""Catalog database: engines, sessions and Alembic migrations.

The URL comes from settings (``VOICELOOP_CATALOG_URL``; default a SQLite file under the data
dir). :func:`connect` upgrades the schema to the newest migration on first use, so a fresh
data dir needs no manual step; ``voiceloop db upgrade`` does the same explicitly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

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


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(url), revision)


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


@contextmanager
def session_scope(url_or_factory: str | sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    factory = connect(url_or_factory) if isinstance(url_or_factory, str) else url_or_factory
    with factory() as session, session.begin():
        yield session
