"""The offline release gate end to end, with real (tiny) trained models, real MLflow and a real catalog:
the first model becomes champion on its own numbers, a deliberately degraded model is refused (recorded
in MLflow and the catalog, once per run key), a better one becomes @challenger."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from asr.registry import MlflowTracker, alias_version, register, set_alias
from asr.train import TrainConfig
from collection.db import session_scope
from collection.manifest import load_split
from collection.releases import release_history
from voiceloop.pipeline import train_model
from voiceloop.release import _copy_split, eval_set, freeze_gold, gate_training_run
from voiceloop.settings import Settings

TINY = {"d_model": 64, "n_heads": 2, "ffn_dim": 128, "n_layers": 2, "conv_kernel": 7, "dropout": 0.0}


@pytest.fixture
def settings(tmp_path, catalog_url, mlflow_store) -> Settings:
    _, root = mlflow_store
    return Settings(data_dir=tmp_path / "data", catalog_url=catalog_url, mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
                    model_name=f"gate-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def few(tiny_studio, tmp_path) -> Path:
    """Six studio utterances as train = dev (a tiny model overfits them in seconds)."""
    root = tmp_path / "few"
    ids = {u.id for u in load_split(tiny_studio / "train")[:6]}
    for split in ("train", "dev"):
        _copy_split(tiny_studio / "train", root / split, keep=ids)
    return root


def degraded_run(settings: Settings, checkpoint: Path, tmp_path: Path) -> str:
    """An MLflow run whose checkpoint is ``checkpoint`` with every weight zeroed: it hears nothing."""
    blob = torch.load(str(checkpoint), weights_only=False)
    blob["state_dict"] = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    path = tmp_path / "degraded" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save(blob, path)
    from voiceloop.pipeline import connect_mlflow

    tracker = MlflowTracker.start(connect_mlflow(settings), run_name="degraded")
    tracker.log_artifact(path, "checkpoint")
    tracker.finish()
    return tracker.run_id


@pytest.mark.slow
def test_gate_promotes_the_first_refuses_a_degraded_model_and_passes_a_better_one(settings, few, tmp_path):
    cfg = TrainConfig(model=TINY, max_minutes=0, max_steps=250, max_frames=4000, lr=3e-3, warmup_steps=10,
                      speed_factors=(1.0,), eval_every_steps=125, dev_limit=6, spec_augment_from=1.0,
                      final_lr_ratio=0.2)
    trained = train_model(settings, few, cfg, tmp_path / "run-good")
    freeze_gold(settings, {"seen": few / "dev"})
    evalset = eval_set(settings)
    assert list(evalset.parts) == ["gold/seen"] and len(evalset.utterances()) == 6

    first = gate_training_run(settings, trained.run_id, evalset, run_key="test/first")
    assert first.decision.promote and first.champion_version is None
    assert alias_version(settings.model_name, "champion") == first.challenger_version  # no champion yet: it is one
    assert first.decision.overall.challenger < 0.2

    bad = degraded_run(settings, trained.result.checkpoint, tmp_path)
    refused = gate_training_run(settings, bad, evalset, run_key="test/degraded")
    assert not refused.decision.promote and refused.challenger_version is None
    assert refused.decision.reasons[0].startswith("not better overall")
    assert refused.decision.overall.challenger > refused.decision.overall.champion
    assert alias_version(settings.model_name, "challenger") is None
    run = MlflowClient().get_run(bad)
    assert run.data.tags["gate.decision"] == "refuse" and run.data.metrics["gate.promote"] == 0.0
    again = gate_training_run(settings, bad, evalset, run_key="test/degraded")  # a retried task: decided already
    assert again.decision == refused.decision

    # the degraded model as champion: the trained one now passes and becomes @challenger
    set_alias(settings.model_name, "champion", register(bad, settings.model_name))
    better = gate_training_run(settings, trained.run_id, evalset, run_key="test/better")
    assert better.decision.promote and alias_version(settings.model_name, "challenger") == better.challenger_version
    assert [b.name for b in better.decision.budgets] == ["latency_p50_ms", "size_mb"]

    with session_scope(settings.catalog) as session:
        steps = [(r.run_key, r.verdict) for r in release_history(session, settings.model_name)]
        numbers = release_history(session, settings.model_name)[0].numbers
    assert sorted(steps) == [("test/better", "pass"), ("test/degraded", "fail"), ("test/first", "pass")]
    assert numbers["overall"]["challenger"] < numbers["overall"]["champion"]


def test_the_gold_set_is_frozen_once_and_production_data_joins_it(settings, tiny_studio):
    gold = freeze_gold(settings, {"heldout": tiny_studio / "test_heldout"})
    hash_before = eval_set(settings).manifest_hash
    assert freeze_gold(settings, {"other": tiny_studio / "train"}) == gold  # the yardstick never moves
    assert eval_set(settings).manifest_hash == hash_before and (gold / "heldout").is_dir()
    assert not (gold / "other").exists()
    # audio paths are absolute: the gold set works wherever the studio's manifests were
    assert all(Path(u.audio_path).is_file() for u in eval_set(settings).utterances())
    with pytest.raises(FileNotFoundError, match="no gold evaluation set"):
        eval_set(settings.model_copy(update={"data_dir": settings.data_dir / "elsewhere"}))
