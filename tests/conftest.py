"""Shared fixtures: real components started once per test session.

- ``tiny_studio``: the studio's ``tiny`` plan rendered with real eSpeak audio (every split, ~40 utterances).
- ``mlflow_store``: a real MLflow tracking store + registry (SQLite backend, local artifacts) in a temp dir.
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
