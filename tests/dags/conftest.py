"""The Airflow harness of the DAG tests: a real metadata DB, the repository's ``dags/``, ``dag.test()``.

Airflow reads its configuration once, when ``airflow`` is first imported (and without ``AIRFLOW_HOME`` it
creates ``~/airflow``). pytest imports this conftest before it collects (imports) any test module of this
folder, and no voiceloop package imports ``airflow``, so setting the environment here, at import time,
comes before the first ``import airflow`` -- whatever a test module imports at its top.
A fixture would be too late (test modules are imported at collection, before any fixture runs), and
``pytest_configure`` in this file runs at this same moment anyway. ``use_in_this_process`` refuses (a
collection error naming both homes) when something imported Airflow earlier.

- ``airflow_home``: the session's AIRFLOW_HOME (temp dir; SQLite metadata DB migrated once per session;
  dags folder = the repository's ``dags/``).
- ``dagbag``: the repository's ``dags/`` loaded once per session.

``dag.test()`` runs every task in the test process: a task's ``Settings()`` reads the test's
``VOICELOOP_*`` environment (``monkeypatch.setenv("VOICELOOP_DATA_DIR", ...)``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from infra.airflow import airflow_home as home_of
from infra.airflow import migrate, repo_dags_folder, use_in_this_process
from voiceloop.settings import Settings

# Read when the DAG files are parsed (default_args): a task that fails retries after 1 s, not a minute.
os.environ.setdefault("VOICELOOP_DAG_RETRY_DELAY_S", "1")
os.environ.setdefault("VOICELOOP_ROLLOUT_POKE_S", "1")  # the deploy sensors look at the traffic every second
_data_dir = Path(tempfile.mkdtemp(prefix="voiceloop-airflow-tests-"))
atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)
# The first call in a process wins (Airflow cannot be re-pointed once imported): another test folder that
# set it up already gets the same home back.
_AIRFLOW_SETTINGS = use_in_this_process(Settings(data_dir=_data_dir), repo_dags_folder(), migrate_db=False)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """This test process's AIRFLOW_HOME, with a migrated metadata DB (``airflow db migrate``, ~3 s, once)."""
    migrate(_AIRFLOW_SETTINGS)
    return home_of(_AIRFLOW_SETTINGS)


@pytest.fixture(scope="session")
def dagbag(airflow_home: Path):
    """The repository's ``dags/``, parsed once; ``dagbag.import_errors`` maps a file to its traceback."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=repo_dags_folder())
