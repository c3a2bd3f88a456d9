"""MLflow access: tracking training/evaluation runs, the model registry and its aliases.

The registry holds one registered model (``voiceloop-asr`` by default). A version's source is the
``checkpoint`` artifact of the run that trained it; the aliases ``champion`` (served) and
``challenger`` (shadow/canary) point at versions. Rolling back is moving an alias back.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

log = logging.getLogger(__name__)

EXPERIMENT = "voiceloop"
ALIASES = ("champion", "challenger")
CHECKPOINT_FILE = "model.pt"


def configure(tracking_uri: str, artifact_root: str | Path | None = None) -> str:
    """Point MLflow at ``tracking_uri`` and make sure our experiment exists; returns its id."""
    mlflow.set_tracking_uri(tracking_uri)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # for child processes (torchrun, Airflow tasks)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    return mlflow.create_experiment(EXPERIMENT, artifact_location=location)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple | Mapping) else v
    return out


class MlflowTracker:
    """The calls the trainer and evaluator make on one MLflow run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.client = MlflowClient()

    @classmethod
    def start(cls, experiment_id: str, run_name: str | None = None, tags: dict | None = None) -> MlflowTracker:
        run = MlflowClient().create_run(experiment_id, run_name=run_name, tags=tags or {})
        return cls(run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for k, v in _flatten(params).items():
            self.client.log_param(self.run_id, k, str(v)[:6000])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            self.client.log_metric(self.run_id, k.replace("+", "plus"), float(v), step=step or 0)

    def log_artifact(self, path: str | Path, artifact_path: str = "") -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path or None)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def register(run_id: str, name: str, alias: str | None = None) -> str:
    """Register ``run_id``'s checkpoint artifact as a new version of ``name``; optionally point ``alias`` at it.

    Returns the version number (as a string)."""
    client = MlflowClient()
    files = [f.path for f in client.list_artifacts(run_id, "checkpoint")]
    if f"checkpoint/{CHECKPOINT_FILE}" not in files:
        raise ValueError(f"run {run_id} has no checkpoint/{CHECKPOINT_FILE} artifact (found: {files or 'nothing'})")
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="voiceloop speech recognition (checkpoint artifacts)")
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    # Re-registering the same run reuses its version: re-running a pipeline adds no duplicates.
    mv = existing[0] if existing else client.create_model_version(name, source=f"runs:/{run_id}/checkpoint",
                                                                  run_id=run_id)
    if alias:
        set_alias(name, alias, mv.version)
    return str(mv.version)


def set_alias(name: str, alias: str, version: str | int) -> None:
    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}")
    MlflowClient().set_registered_model_alias(name, alias, str(version))
    log.info("%s@%s -> version %s", name, alias, version)


def delete_alias(name: str, alias: str) -> None:
    """Unset ``alias`` (a no-op when it is not set): serving stops using that slot on its next poll."""
    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}")
    if alias_version(name, alias) is not None:
        MlflowClient().delete_registered_model_alias(name, alias)
        log.info("%s@%s unset", name, alias)


def alias_version(name: str, alias: str) -> str | None:
    """The version an alias points at, or None when it is unset."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def resolve_checkpoint(uri: str, dst_dir: str | Path | None = None) -> tuple[Path, str]:
    """A local copy of the checkpoint at ``runs:/<id>/checkpoint`` or ``models:/<name>@<alias>`` (or ``/<version>``).

    Returns (path, model version label) — ``name/version`` for registry URIs, else the URI itself.
    """
    uri = str(uri)
    if not uri.startswith(("models:/", "runs:/")):
        raise ValueError(f"{uri!r} is not a registry URI (models:/<name>@<alias> or runs:/<id>/checkpoint)")
    label = uri
    if uri.startswith("models:/"):
        name, _, ref = uri[len("models:/") :].partition("@")
        client = MlflowClient()
        try:
            if ref:
                mv = client.get_model_version_by_alias(name, ref)
            else:
                name, _, version = name.partition("/")
                mv = client.get_model_version(name, version)
        except mlflow.exceptions.MlflowException as e:
            raise ValueError(f"{uri}: no such registered model version/alias ({e.message})") from e
        label = f"{name}/{mv.version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir) if dst_dir else None))
    path = local / CHECKPOINT_FILE if local.is_dir() else local
    if not path.is_file():
        raise FileNotFoundError(f"{uri}: artifact has no {CHECKPOINT_FILE}")
    return path, label
