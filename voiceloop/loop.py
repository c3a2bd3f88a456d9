"""The loop's steps as the Airflow DAGs run them (dags/*.py), each one call that joins the packages.

Every step is idempotent for its logical date: it reads what is there, adds only what is missing, and
names what it writes after its inputs (dataset versions by content hash, re-collection plans by day,
training runs by dataset version and config, release decisions by run key), so a retried or re-run task
leaves the same outputs and no duplicate rows. Each returns small, JSON-ready values (ids, counts, paths)
for XCom; data stays on disk and in the catalog.

    collect_and_label   plans with gaps → synthetic studio → QC → label tasks (pre-labelled by the champion)
    consolidate_labels  complaints follow their labels → a new dataset version when enough is reviewed
    train_candidate     train on a dataset version (torchrun on GPUs when the worker has CUDA)
    gate_candidate      evaluate on gold + recent production, gate against the champion → @challenger
    curate_feedback     VOC, low-confidence and drifting-slice audio → label tasks; weak slices → re-collection
    monitor_drift       one window's slice metrics and alerts → whether retraining is called for
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)

RECOLLECT_PREFIX = "recollect-"
# Alerts that mean "the model is worse for these people": they trigger retraining and re-collection.
RETRAIN_ALERT_KINDS = ("wer_regression", "voc_spike", "confidence_drop")
CURATED_SLICE_KEYS = ("dialect", "age_band", "environment")  # slice keys that are also data-plan cell axes


def plans_dir(settings: Settings) -> Path:
    return settings.data_dir / "plans"


# -- collect_and_label -------------------------------------------------------------------------------
def recollection_plans(settings: Settings) -> list[Path]:
    """The re-collection plans curation wrote (``<data dir>/plans/recollect-*.yaml``), oldest first."""
    return sorted(plans_dir(settings).glob(f"{RECOLLECT_PREFIX}*.yaml"))


def plans_with_gaps(settings: Settings, plan: str) -> list[str]:
    """The main plan and each re-collection plan that still has cells below target (paths for the latter)."""
    from collection.dataplan import load_dataplan
    from collection.db import session_scope
    from collection.quota import plan_status, totals

    out = []
    with session_scope(settings.catalog) as session:
        for p in [plan, *map(str, recollection_plans(settings))]:
            target, have, _ = totals(plan_status(session, load_dataplan(p, search=(plans_dir(settings),))))
            if have < target:
                out.append(p)
    return out


def collect_plan(settings: Settings, plan: str, *, limit: int | None = None) -> dict[str, Any]:
    """Fill one plan's missing cells with studio speech; QC refuses what fails (re-runs add only what is
    still missing)."""
    from .collect import collect_for_plan

    # One rendering process: spawned renderers would re-import Airflow's task runner, which refuses to start
    # without the metadata DB a task process is not given (the first full demo's collect task died so).
    result = collect_for_plan(settings, plan, limit=limit, progress=False)
    return {"plan": Path(plan).stem, "accepted": result.accepted, "rejected": result.rejected,
            "remaining": result.remaining}


def queue_labels(settings: Settings) -> dict[str, Any]:
    """Queue every recording without a label task, pre-labelled by the champion when there is one."""
    from asr.registry import alias_version

    from .collect import queue_for_labeling
    from .pipeline import connect_mlflow

    connect_mlflow(settings)
    champion = alias_version(settings.model_name, "champion")
    created = queue_for_labeling(settings, f"models:/{settings.model_name}@champion" if champion else None)
    return {"tasks_created": created, "prelabelled_by": champion}


# -- consolidate_labels ------------------------------------------------------------------------------
def consolidate_labels(settings: Settings, *, min_new: int, name: str = "main") -> dict[str, Any]:
    """Complaints whose audio got a reviewed label move to ``labeled``; when at least ``min_new`` reviewed
    recordings are not yet in the newest dataset version, freeze a new one. ``dataset`` in the result is
    the new version's id, or None (nothing to publish: the DAG then emits no dataset event)."""
    from sqlalchemy import select

    from collection.db import session_scope
    from collection.labeling import reviewed_transcripts
    from collection.models import DatasetMember, DatasetVersion
    from monitoring.voc import sync_labeled

    from .collect import freeze_dataset

    with session_scope(settings.catalog) as session:
        moved = sync_labeled(session, actor="consolidate_labels")
        latest = session.scalar(select(DatasetVersion).where(DatasetVersion.name == name)
                                .order_by(DatasetVersion.created_at.desc()).limit(1))
        reviewed = set(reviewed_transcripts(session))
        included = set(session.scalars(select(DatasetMember.recording_id)
                                       .where(DatasetMember.dataset_id == latest.id))) if latest else set()
        new = len(reviewed - included)
        latest_id = latest.id if latest else None
    result = {"voc_labeled": len(moved), "new_reviewed": new, "min_new": min_new, "dataset": None,
              "manifest": None}
    if new < min_new:
        log.info("%d new reviewed recording(s), fewer than %d: no new dataset version", new, min_new)
        return result
    version = freeze_dataset(settings, name)  # the same reviewed data freezes to the same version
    if version.id != latest_id:
        result.update(dataset=version.id, manifest=version.manifest_uri)
    return result


# -- train_candidate ---------------------------------------------------------------------------------
def dataset_root(settings: Settings, dataset: str | None = None, name: str = "main") -> tuple[str, Path]:
    """(id, directory) of dataset version ``dataset`` (default: the newest of ``name``).

    Raises:
        LookupError: no such version.
    """
    from sqlalchemy import select

    from collection.db import session_scope
    from collection.models import DatasetVersion

    with session_scope(settings.catalog) as session:
        query = select(DatasetVersion)
        query = (query.where(DatasetVersion.id == dataset) if dataset else
                 query.where(DatasetVersion.name == name).order_by(DatasetVersion.created_at.desc()).limit(1))
        version = session.scalar(query)
        if version is None:
            raise LookupError(f"no dataset version {dataset!r}" if dataset else f"no dataset version named {name!r}")
        return version.id, Path(version.manifest_uri)


def champion_trained_on(settings: Settings) -> str | None:
    """The dataset directory the champion's training run used (its ``dataset.root`` param), if known."""
    from mlflow import MlflowClient

    from asr.registry import alias_version

    from .pipeline import connect_mlflow

    connect_mlflow(settings)
    version = alias_version(settings.model_name, "champion")
    if version is None:
        return None
    run_id = MlflowClient().get_model_version(settings.model_name, version).run_id
    root = MlflowClient().get_run(run_id).data.params.get("dataset.root") if run_id else None
    return str(Path(root).resolve()) if root else None


def new_data_since_champion(settings: Settings, dataset: str | None = None) -> tuple[bool, str]:
    """Whether there is something to retrain on: a dataset version (``dataset``, default the newest) other
    than the one the champion was trained on. (answer, why) — a drift alert or the weekly tick with no new
    data since the champion has nothing to learn from: curation must collect first."""
    try:
        version, root = dataset_root(settings, dataset)
    except LookupError as e:
        return False, str(e)
    if champion_trained_on(settings) == str(root.resolve()):
        return False, f"the champion was trained on {version} already, the newest dataset version"
    return True, f"dataset version {version}"


def cuda_devices() -> int:
    """GPUs this worker can train on (0 on a CPU-only machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def train_candidate(settings: Settings, dataset: str | None, *, config: str = "baseline",
                    finetune_config: str | None = None, minutes: float | None = None,
                    steps: int | None = None, run_key: str | None = None) -> dict[str, Any]:
    """Train on a dataset version's train/dev splits. With a champion and ``finetune_config``, fine-tune
    the champion (its weights, a low learning rate: the config's) on the whole version — the new data
    together with what the champion learned from, so standard speech is not forgotten; otherwise train
    ``config`` from scratch (the first model).

    On a worker with CUDA the training runs under ``torchrun`` (one process per GPU; the trainer is
    DDP-ready), otherwise in this process on the CPU. The output directory is named after the dataset
    version, the config and the champion it starts from, and a finished run with the same data and config
    is reused (``resume``), so a retried task does not train twice; with ``run_key`` (the DAG run) a re-run
    of the same run returns what it trained the first time, even though the champion may have changed
    since (the first model of a registry becomes the champion in the same run). ``{"skipped": why}`` when
    there is no dataset version, or none the champion was not trained on already."""
    import hashlib
    import json

    from asr.registry import alias_version, resolve_checkpoint
    from asr.train import load_train_config

    from .pipeline import FINISHED, connect_mlflow, train_model

    marker = (settings.data_dir / "runs" / ".by-run-key" / f"{hashlib.sha256(run_key.encode()).hexdigest()[:24]}.json"
              if run_key else None)
    if marker is not None and marker.exists():
        done = json.loads(marker.read_text())
        if (Path(done["out"]) / FINISHED).exists():
            log.info("%s trained %s already (MLflow run %s)", run_key, done["out"], done["run_id"])
            return done
    new, why = new_data_since_champion(settings, dataset)
    if not new:  # a drift alert or the weekly tick with nothing new to learn from: curation collects first
        return {"skipped": why}
    version, root = dataset_root(settings, dataset)
    connect_mlflow(settings)
    champion = alias_version(settings.model_name, "champion") if finetune_config else None
    overrides: dict[str, Any] = {"max_minutes": minutes, "max_steps": steps}
    name = f"{version}-{Path(config).stem}"
    if champion is not None:
        start, _ = resolve_checkpoint(f"models:/{settings.model_name}/{champion}",
                                      settings.data_dir / "registry" / champion)
        config, overrides["init_from"] = finetune_config, str(start)
        name = f"{version}-{Path(config).stem}-from-{champion}"
    cfg = load_train_config(config, **overrides)
    out = settings.data_dir / "runs" / name
    gpus = cuda_devices()
    if gpus:
        command = [shutil.which("torchrun") or "torchrun", f"--nproc_per_node={gpus}", "-m", "voiceloop.cli",
                   "train", "--data", str(root), "--config", config, "--out", str(out), "--resume",
                   "--data-dir", str(settings.data_dir)]
        command += [f"--minutes={minutes}"] if minutes is not None else []
        command += [f"--steps={steps}"] if steps is not None else []
        command += [f"--init-from={overrides['init_from']}"] if champion is not None else []
        log.info("training on %d GPU(s): %s", gpus, " ".join(command))
        subprocess.run(command, check=True, env={**os.environ})
        run_id = json.loads((out / FINISHED).read_text())["run_id"]
        device = f"cuda x{gpus}"
    else:
        trained = train_model(settings, root, cfg, out, resume=True, run_name=f"retrain-{version}")
        run_id, device = trained.run_id, "cpu"
    result = {"run_id": run_id, "dataset": version, "dataset_root": str(root), "out": str(out), "device": device,
              "finetuned_from": champion, "run_key": run_key}
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(marker)  # written whole or not at all
    return result


# -- gate_candidate ----------------------------------------------------------------------------------
def gate_candidate(settings: Settings, run_id: str, dataset: str | None, *, run_key: str) -> dict[str, Any]:
    """Judge a trained run against the champion on the frozen gold set plus the dataset version's recent
    production data (voiceloop.release), decoding as serving does (``settings.decoder``: the gate judges
    what devices would get); registers ``@challenger`` only when the gate passes."""
    from .release import eval_set, gate_training_run

    _, root = dataset_root(settings, dataset)
    outcome = gate_training_run(settings, run_id, eval_set(settings, root), run_key=run_key,
                                decoder=settings.decoder)
    return {"promote": outcome.decision.promote, "summary": outcome.decision.summary,
            "challenger_version": outcome.challenger_version, "champion_version": outcome.champion_version}


# -- curate_feedback ---------------------------------------------------------------------------------
@dataclass
class Curation:
    voc_tasks: int = 0
    low_confidence_tasks: int = 0
    drift_tasks: int = 0
    weak_slices: list[tuple[str, str]] = field(default_factory=list)
    recollection_plan: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"voc_tasks": self.voc_tasks, "low_confidence_tasks": self.low_confidence_tasks,
                "drift_tasks": self.drift_tasks, "weak_slices": [f"{k}={v}" for k, v in self.weak_slices],
                "recollection_plan": self.recollection_plan}


def curate_feedback(settings: Settings, plan: str, day: datetime | None, *, lookback: timedelta = timedelta(days=1),
                    per_cell: int = 4, low_confidence: float | None = None) -> dict[str, Any]:
    """What went wrong yesterday goes to people, and what is missing gets collected:

    - open complaints (new/triaged) with audio people may hear → label tasks (reason ``voc``, first);
    - production audio kept under consent with confidence below the threshold → ``low_confidence`` tasks;
    - production audio of slices with open alerts (WER, VOC, confidence) → ``drift`` tasks;
    - those weak slices → ``<data dir>/plans/recollect-<day>.yaml``: the main plan's cells re-targeted at
      each weak slice, ``per_cell`` utterances each, which ``collect_and_label`` fills next.

    Only audio whose consent allows human review is queued (``create_tasks`` checks). Idempotent for ``day``.
    """
    from sqlalchemy import select

    from collection.dataplan import load_dataplan
    from collection.db import session_scope
    from collection.labeling import LOW_CONFIDENCE, create_tasks
    from collection.models import Feedback, ProductionUtterance, utcnow
    from monitoring.alerts import open_alerts
    from monitoring.timerange import MonitoringError
    from monitoring.voc import send_to_labeling

    threshold = LOW_CONFIDENCE if low_confidence is None else low_confidence
    day = day or utcnow()  # a manually triggered run has no data interval
    since, until = day - lookback, day
    out = Curation()
    with session_scope(settings.catalog) as session:
        for fid in session.scalars(select(Feedback.id).where(Feedback.status.in_(("new", "triaged")),
                                                             Feedback.label_task_id.is_(None))):
            try:
                send_to_labeling(session, fid, actor="curate_feedback")
                out.voc_tasks += 1
            except MonitoringError as e:  # nothing people may listen to: the complaint stays for ops
                log.info("complaint %s not sent to labeling: %s", fid, e)
        pu = ProductionUtterance
        kept = (pu.recording_id.is_not(None), pu.created_at >= since, pu.created_at < until)
        low = list(session.scalars(select(pu.recording_id).where(*kept, pu.confidence < threshold)))
        out.low_confidence_tasks = len(create_tasks(session, low, reason="low_confidence", double_share=0.0)) \
            if low else 0
        alerts = open_alerts(session, kinds=RETRAIN_ALERT_KINDS)
        weak = sorted({(a.slice_key, a.slice_value) for a in alerts
                       if a.slice_key in CURATED_SLICE_KEYS and a.slice_value not in ("all", "unknown")})
        out.weak_slices = weak
        drift_ids: list[str] = []
        for key, value in weak:
            drift_ids += list(session.scalars(select(pu.recording_id).where(*kept, getattr(pu, key) == value)))
        if drift_ids:
            out.drift_tasks = len(create_tasks(session, drift_ids, reason="drift", double_share=0.0))
    if weak:
        path = write_recollection_plan(settings, load_dataplan(plan, search=(plans_dir(settings),)), weak, day,
                                       per_cell)
        out.recollection_plan = str(path) if path else None
    return out.to_dict()


def write_recollection_plan(settings: Settings, plan: Any, slices: list[tuple[str, str]], day: datetime,  # noqa: ANN401
                            per_cell: int) -> Path | None:
    """``recollect-<YYYYMMDD>``: for each weak slice, the plan's cells re-targeted at it (a Gyeongsang alert
    turns each cell into its Gyeongsang twin; a 70s+ alert each into its 70s+ twin), ``per_cell`` utterances
    each, counted under the plan's own name (quota_scope plan) — so a plan that never asked for the slice
    still gets it collected. Twins the plan itself asks ``per_cell`` or more of (an alert on the 30s of a
    plan that collects 80 per 30s cell) are left out: the slice's production audio goes to labeling
    instead (the first full demo re-collected its 30s and 40s because their owners complained too). None
    when there is nothing to collect."""
    from dataclasses import replace

    from collection.dataplan import write_dataplan

    planned = {cell.axes: cell.target for cell in plan.cells}
    cells: dict[tuple, Any] = {}
    for key, value in slices:
        for cell in plan.cells:
            twin = replace(cell, **{key: value}, target=per_cell)
            if planned.get(twin.axes, 0) < per_cell:  # a cell the plan fills as amply already needs no twin
                cells.setdefault(twin.axes, twin)
    if not cells or per_cell <= 0:
        return None
    name = f"{RECOLLECT_PREFIX}{day:%Y%m%d}"
    recollect = replace(plan, name=name, parent=plan.name, quota_scope="plan",
                        cells=tuple(cells[k] for k in sorted(cells)),
                        description=f"Re-collection for {', '.join(f'{k}={v}' for k, v in slices)} "
                                    f"(curate_feedback, {day:%Y-%m-%d}).")
    return write_dataplan(recollect, plans_dir(settings) / f"{name}.yaml")


# -- monitor_drift -----------------------------------------------------------------------------------
def monitor_drift(settings: Settings, window_end: datetime | None, *, window_s: int | None = None) -> dict[str, Any]:
    """Compute the window ending at ``window_end`` and its alerts; ``retrain`` says whether open alerts of
    :data:`RETRAIN_ALERT_KINDS` on a slice call for retraining (the DAG then updates the alert Asset)."""
    from collection.models import utcnow
    from monitoring.drift import align
    from monitoring.job import DriftJob

    window_s = window_s or settings.drift_window_s
    # a scheduled run: the window that just ended; a manual one (no data interval): the window so far,
    # recomputed (upserted) once it is complete
    end = align(window_end, window_s) if window_end else align(utcnow(), window_s) + timedelta(seconds=window_s)
    result, summary = DriftJob.from_settings(settings).run(end, window_s)
    triggering = [a for a in summary.opened if a.kind in RETRAIN_ALERT_KINDS]
    return {"window_end": end.isoformat(), "utterances": result.utterances, "labeled": result.labeled,
            "opened": [f"{a.kind}:{a.slice_key}={a.slice_value}" for a in summary.opened],
            "resolved": len(summary.resolved), "retrain": bool(triggering)}

