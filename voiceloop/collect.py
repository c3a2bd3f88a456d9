"""Collection steps that join the packages (plan → collect → label → dataset version), each one call.

The demo and (later) the Airflow DAGs call these with :class:`~voiceloop.settings.Settings`; the
work happens in ``collection``. :func:`simulated_labeling` stands in for people and is for demos
and tests only: its users and labels are marked simulated in the catalog.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from collection.dataplan import DataPlan, load_dataplan
from collection.datasets import build_dataset
from collection.db import session_scope
from collection.labeling import (
    LOW_CONFIDENCE,
    assign,
    create_tasks,
    prelabel,
    simulate_labeler,
    simulate_reviewer,
)
from collection.models import DatasetVersion
from collection.quota import CellStatus, plan_status, plot_status
from collection.store import AudioStore
from collection.synthetic import CollectResult, collect_synthetic
from collection.users import create_user

from .settings import Settings

log = logging.getLogger(__name__)


def collect_for_plan(settings: Settings, plan: str | Path | DataPlan, *, limit: int | None = None,
                     workers: int = 1, progress: bool = True) -> CollectResult:
    """Fill the plan's missing cells with synthetic studio speech (re-runs add only what is missing)."""
    from collection.db import connect

    return collect_synthetic(connect(settings.catalog), AudioStore(settings.audio_store), load_dataplan(plan),
                             limit=limit, workers=workers, progress=progress)


def queue_for_labeling(settings: Settings, model_uri: str | None = None) -> int:
    """Queue every recording without a task (a share of them twice) and, with ``model_uri``, pre-label
    the open tasks (:func:`prelabel_open_tasks`). Returns the number of tasks created."""
    with session_scope(settings.catalog) as session:
        created = len(create_tasks(session, double_share=settings.double_label_share))
    if model_uri:
        prelabel_open_tasks(settings, model_uri)
    return created


def prelabel_open_tasks(settings: Settings, model_uri: str | None = None, *, decoder: str = "beam",
                        threshold: float = LOW_CONFIDENCE) -> tuple[int, str]:
    """Pre-label the open tasks with ``model_uri`` (a checkpoint path, ``runs:/…`` or ``models:/…``;
    default the champion). Returns (tasks pre-labelled, the model version that did it)."""
    from asr.inference import Recognizer

    from .pipeline import connect_mlflow

    uri = model_uri or f"models:/{settings.model_name}@champion"
    if uri.startswith(("models:/", "runs:/")):
        connect_mlflow(settings)
    recognizer = Recognizer.load(uri, decoder=decoder)
    with session_scope(settings.catalog) as session:
        n = prelabel(session, AudioStore(settings.audio_store), recognizer, model_version=recognizer.version,
                     threshold=threshold)
    return n, recognizer.version


@dataclass(frozen=True)
class SimulatedRound:
    labelers: tuple[str, ...]
    submitted: int
    reviewed: int


def simulated_labeling(settings: Settings, *, labelers: int = 2, error_rate: float = 0.05, seed: int = 0,
                       max_cer: float = 0.1, heard: Mapping[str, str] | None = None) -> SimulatedRound:
    """Simulated labelers transcribe every open task and a simulated reviewer decides the queue
    (agreeing double transcriptions are accepted without it). ``heard``: what was said in recordings
    without a prompt text (production audio; see ``collection.labeling.simulate_labeler``). Demos and
    tests only."""
    names = tuple(f"sim-labeler-{i + 1}" for i in range(labelers))
    with session_scope(settings.catalog) as session:
        # Simulated users never log in: a random password nobody knows.
        users = [create_user(session, name, "labeler", secrets.token_urlsafe(16), simulated=True) for name in names]
        reviewer = create_user(session, "sim-reviewer", "reviewer", secrets.token_urlsafe(16), simulated=True)
        assign(session, users)
        submitted = sum(simulate_labeler(session, user, error_rate=error_rate, seed=seed, heard=heard)
                        for user in users)
        reviewed = simulate_reviewer(session, reviewer, max_cer=max_cer, heard=heard)
    return SimulatedRound(names, submitted, reviewed)


def freeze_dataset(settings: Settings, name: str = "main", *, seed: int = 0) -> DatasetVersion:
    """Freeze the reviewed transcripts into a dataset version under ``<data dir>/datasets``."""
    with session_scope(settings.catalog) as session:
        return build_dataset(session, AudioStore(settings.audio_store), settings.data_dir / "datasets", name=name,
                             seed=seed)


def plan_progress(settings: Settings, plan: str | Path | DataPlan, png: Path | None = None
                  ) -> tuple[list[CellStatus], Path | None]:
    """Per-cell collected / labeled / target, and optionally the heatmap PNG."""
    plan = load_dataplan(plan)
    with session_scope(settings.catalog) as session:
        statuses = plan_status(session, plan)
    return statuses, plot_status(statuses, png, title=f"data plan {plan.name}") if png else None
