"""The champion's offline baseline and input reference, read from a real MLflow registry and training data."""

from __future__ import annotations

import uuid

import pytest

from asr.registry import MlflowTracker, register
from monitoring.baseline import MlflowBaselines
from monitoring.reference import FEATURES, champion_reference, reference_path


def _registered_run(experiment_id: str, tmp_path, name: str, params: dict, metrics: dict) -> str:
    """A run with a checkpoint artifact (never loaded here), registered as @champion of ``name``."""
    tracker = MlflowTracker.start(experiment_id, run_name="train-test", tags={"stage": "train"})
    (tmp_path / "model.pt").write_bytes(b"not loaded by these tests")
    tracker.log_artifact(tmp_path / "model.pt", "checkpoint")
    tracker.log_params(params)
    tracker.log_metrics(metrics)
    tracker.finish()
    return register(tracker.run_id, name, alias="champion")


def test_champion_baseline_and_reference(mlflow_store, tiny_studio, tmp_path):
    experiment_id, _ = mlflow_store
    name = f"drift-{uuid.uuid4().hex[:6]}"
    version = _registered_run(experiment_id, tmp_path, name, {"dataset.root": str(tiny_studio)}, {
        "test_seen.wer": 0.2, "test_seen.cer": 0.1, "test_seen.n.dialect.standard": 4.0,
        "test_seen.wer.dialect.standard": 0.2, "test_seen.cer.dialect.standard": 0.1,
        "test_heldout.wer": 0.5, "test_heldout.n.dialect.gyeongsang": 4.0, "test_heldout.n.dialect.standard": 4.0,
        "test_heldout.wer.dialect.gyeongsang": 0.6, "test_heldout.wer.dialect.standard": 0.4,
    })
    label = f"{name}/{version}"

    baselines = MlflowBaselines(name)
    champion = baselines("")
    assert champion is not None and champion.model_version == label
    assert champion.splits == ("test_seen", "test_heldout")
    assert champion.get("wer", "dialect", "standard") == (pytest.approx((0.2 * 4 + 0.4 * 4) / 8), 8)
    assert champion.get("wer", "dialect", "gyeongsang") == (0.6, 4)
    assert baselines(label) == champion
    assert baselines("other-model/1") is None and baselines("tiny.pt") is None

    profile = champion_reference(name, tmp_path / "data", "ko")
    assert profile is not None and profile.model_version == label and set(profile.features) == set(FEATURES)
    train_n = len((tiny_studio / "train" / "supervisions.jsonl").read_text().splitlines())
    assert all(f.n == train_n for f in profile.features.values())
    assert 0.5 < profile.features["duration"].mean < 5 and -60 < profile.features["speech_dbfs"].mean < 0
    assert reference_path(tmp_path / "data", label).exists()  # measured once, then read back
    assert champion_reference(name, tmp_path / "data", "ko") == profile


def test_no_champion_or_unreachable_data_means_no_reference(mlflow_store, tmp_path):
    experiment_id, _ = mlflow_store
    assert champion_reference(f"absent-{uuid.uuid4().hex[:6]}", tmp_path, "ko") is None
    assert MlflowBaselines(f"absent-{uuid.uuid4().hex[:6]}")("") is None
    name = f"drift-{uuid.uuid4().hex[:6]}"
    _registered_run(experiment_id, tmp_path, name, {"dataset.root": str(tmp_path / "gone")}, {"x": 1.0})
    assert champion_reference(name, tmp_path, "ko") is None
    assert MlflowBaselines(name)("") is None  # registered but never evaluated
