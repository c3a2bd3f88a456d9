"""Shared fixtures: real components started once per test session.

- ``tiny_studio``: the studio's ``tiny`` plan rendered with real eSpeak audio (every split, ~40 utterances).
- ``mlflow_store``: a real MLflow tracking store + registry (SQLite backend, local artifacts) in a temp dir.
- ``kafka_bootstrap``: a real Kafka-compatible broker (tansu, memory storage) on a free loopback port.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asr.registry import configure
from collection.studio import synthesize_plan


@pytest.fixture(scope="session")
def tiny_studio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_studio")
    synthesize_plan("tiny", root, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(experiment id, root dir); MLflow's global tracking URI points here for the whole session."""
    root = tmp_path_factory.mktemp("mlflow")
    return configure(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"), root


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory):
    """``host:port`` of one tansu broker for the whole test session. Tests keep apart by topic prefix
    (``VOICELOOP_KAFKA_TOPIC_PREFIX``) and consumer group."""
    from infra.stack import StackError, start_broker, tansu_binary

    try:
        tansu_binary()
    except StackError as e:
        pytest.skip(f"no Kafka broker for the Kafka tests: {e}")
    broker = start_broker(log_path=tmp_path_factory.mktemp("kafka") / "tansu.log")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


# --- catalog -----------------------------------------------------------------------------
# Every test that takes `catalog` gets a fresh, migrated database. SQLite by default; set
# VOICELOOP_TEST_CATALOG_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres to run the
# same tests on PostgreSQL (CI does both: `make test-pg`). Each test gets its own database there.


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if {"catalog", "catalog_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.catalog)


@pytest.fixture
def catalog_url(tmp_path: Path):
    import os
    import uuid

    from sqlalchemy import create_engine, text

    base = os.environ.get("VOICELOOP_TEST_CATALOG_URL")
    if not base:
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    name = f"vl_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        from collection.db import dispose

        dispose(url)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def catalog(catalog_url: str):
    """A session factory on a fresh, migrated catalog."""
    from collection.db import connect

    return connect(catalog_url)


@pytest.fixture
def audio_store(tmp_path: Path):
    from collection.store import AudioStore

    return AudioStore(tmp_path / "audio-store")
