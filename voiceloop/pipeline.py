"""Pipeline steps that join the packages (data → train → evaluate → register), each one call.

The CLI, the demo and (later) the Airflow DAGs call these; they hold no logic of their own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from asr.evaluate import EvalReport, evaluate
from asr.inference import Recognizer
from asr.registry import MlflowTracker, configure, register
from asr.train import TrainConfig, TrainResult, train
from collection.datasets import dataset_tags
from collection.manifest import load_split, manifest_hash

from .settings import Settings

log = logging.getLogger(__name__)

def connect_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured tracking store; returns the voiceloop experiment id."""
    return configure(settings.tracking_uri, settings.artifact_root)


@dataclass
class TrainedModel:
    run_id: str
    result: TrainResult


def train_model(settings: Settings, data_root: Path, cfg: TrainConfig, out_dir: Path, resume: bool = False,
                run_name: str | None = None) -> TrainedModel:
    """Train on ``data_root/train`` (dev curve on ``data_root/dev``) inside an MLflow run.

    Under torchrun only rank 0 talks to MLflow; the other ranks return an empty run id.
    """
    train_utts, dev_utts = load_split(data_root / "train"), load_split(data_root / "dev")
    if int(os.environ.get("RANK", "0")) != 0:
        return TrainedModel("", train(cfg, train_utts, dev_utts, out_dir, resume=resume))
    data_hash = manifest_hash(data_root / "train")
    finished = _finished_run(out_dir, cfg, data_hash) if resume else None
    if finished:
        log.info("%s is already trained on this data with this config (MLflow run %s); skipping", out_dir,
                 finished.run_id)
        return finished
    tracker = MlflowTracker.start(connect_mlflow(settings), run_name=run_name or f"train-{cfg.backend}",
                                  tags={"stage": "train", **dataset_tags(data_root)})
    try:
        tracker.log_params({"dataset.manifest_hash": data_hash, "dataset.root": str(data_root.resolve())})
        result = train(cfg, train_utts, dev_utts, out_dir, resume=resume, tracker=tracker)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    (out_dir / FINISHED).write_text(json.dumps({
        "run_id": tracker.run_id, "manifest_hash": data_hash, "config": dataclasses.asdict(cfg),
        "steps": result.steps, "train_minutes": result.train_minutes}, default=list))
    return TrainedModel(tracker.run_id, result)


FINISHED = "finished.json"  # written next to model.pt when a tracked training run completes


def _finished_run(out_dir: Path, cfg: TrainConfig, data_hash: str) -> TrainedModel | None:
    """The completed run in ``out_dir`` if it used the same config and training data, else None."""
    try:
        done = json.loads((out_dir / FINISHED).read_text())
        history = json.loads((out_dir / "history.json").read_text())
    except FileNotFoundError:
        return None
    same_config = done["config"] == json.loads(json.dumps(dataclasses.asdict(cfg), default=list))
    if not (same_config and done["manifest_hash"] == data_hash and (out_dir / "model.pt").exists()):
        return None
    result = TrainResult(out_dir / "model.pt", done["steps"], done["train_minutes"], history)
    return TrainedModel(done["run_id"], result)


def evaluate_splits(settings: Settings, model_uri: str, data_root: Path, splits: list[str], out_dir: Path,
                    run_id: str | None = None, decoder: str = "beam") -> dict[str, EvalReport]:
    """Evaluate a model on each split; write ``<out_dir>/<split>.json``; log per-slice metrics to MLflow.

    Metrics go to ``run_id`` (the training run) when given, else to a new evaluation run.
    """
    exp = connect_mlflow(settings)
    recognizer = Recognizer.load(model_uri, decoder=decoder)
    tracker = MlflowTracker(run_id) if run_id else MlflowTracker.start(
        exp, run_name=f"eval-{recognizer.version}", tags={"stage": "eval"})
    reports = {}
    for split in splits:
        report = evaluate(recognizer, load_split(data_root / split))
        report.write_json(out_dir / f"{split}.json")
        # A re-run of the same evaluation adds no duplicate points to the run's metric history.
        logged = tracker.client.get_run(tracker.run_id).data.metrics
        metrics = {f"{split}.{k}": v for k, v in report.flat_metrics().items()}
        tracker.log_metrics({k: v for k, v in metrics.items() if logged.get(k) != v})
        tracker.log_params({f"eval.{split}.manifest_hash": manifest_hash(data_root / split)})
        tracker.log_artifact(out_dir / f"{split}.json", "eval")
        reports[split] = report
    if not run_id:
        tracker.finish()
    return reports


def register_run(settings: Settings, run_id: str, alias: str | None) -> str:
    connect_mlflow(settings)
    return register(run_id, settings.model_name, alias)
