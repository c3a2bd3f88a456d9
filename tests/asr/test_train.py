"""The training loop on real (tiny) studio audio: overfitting, resuming, DDP, the HF backend, MLflow logging."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
import torch

from asr.backends import load_checkpoint
from asr.evaluate import evaluate
from asr.inference import Recognizer
from asr.registry import MlflowTracker
from asr.train import TrainConfig, train
from collection.manifest import load_split

TINY_CONFORMER = {"d_model": 64, "n_heads": 2, "ffn_dim": 128, "n_layers": 2, "conv_kernel": 7, "dropout": 0.0}


def tiny_cfg(**overrides) -> TrainConfig:
    base = dict(model=TINY_CONFORMER, max_minutes=0, max_steps=4, max_frames=4000, lr=3e-3, warmup_steps=10,
                speed_factors=(1.0,), eval_every_steps=2, dev_limit=4)
    return TrainConfig(**{**base, **overrides})


@pytest.mark.slow
def test_tiny_model_overfits_a_handful_of_utterances(tiny_studio, tmp_path):
    utts = load_split(tiny_studio / "train")[:4]
    cfg = tiny_cfg(max_steps=250, spec_augment_from=1.0, eval_every_steps=50, final_lr_ratio=0.2)
    result = train(cfg, utts, utts, tmp_path)
    assert result.steps == 250
    assert result.history[-1]["dev_cer"] < 0.1, result.history
    assert result.history[-1]["dev_cer"] < result.history[0]["dev_cer"]
    report = evaluate(Recognizer.load(str(result.checkpoint)), utts)
    assert report.overall.cer < 0.1

    # fine-tuning starts from those weights: a few low-rate steps keep what the model knew
    tuned = train(tiny_cfg(max_steps=5, lr=1e-4, init_from=str(result.checkpoint)), utts, utts, tmp_path / "ft")
    assert evaluate(Recognizer.load(str(tuned.checkpoint)), utts).overall.cer < 0.1
    with pytest.raises(ValueError, match="not the configured"):
        train(tiny_cfg(model={**TINY_CONFORMER, "n_layers": 3}, init_from=str(result.checkpoint)), utts, utts,
              tmp_path / "other")


def test_resume_continues_the_same_run(tiny_studio, tmp_path):
    utts, dev = load_split(tiny_studio / "train"), load_split(tiny_studio / "dev")
    first = train(tiny_cfg(max_steps=4), utts, dev, tmp_path)
    assert first.steps == 4 and (tmp_path / "train_state.pt").exists()
    second = train(tiny_cfg(max_steps=8), utts, dev, tmp_path, resume=True)
    assert second.steps == 8
    assert [p["step"] for p in second.history] == [2, 4, 6, 8]
    assert load_checkpoint(second.checkpoint).meta["step"] == 8
    again = train(tiny_cfg(max_steps=8), utts, dev, tmp_path, resume=True)  # finished: nothing more to do
    assert again.steps == 8 and len(again.history) == 4


def test_training_run_is_tracked_in_mlflow(tiny_studio, tmp_path, mlflow_store):
    exp, _ = mlflow_store
    tracker = MlflowTracker.start(exp, run_name="test-train")
    train(tiny_cfg(), load_split(tiny_studio / "train"), load_split(tiny_studio / "dev"), tmp_path, tracker=tracker)
    tracker.finish()
    run = mlflow.get_run(tracker.run_id)
    assert run.data.params["train.backend"] == "conformer_ctc"
    assert run.data.params["model.d_model"] == "64"
    assert "dev_cer" in run.data.metrics and "train_loss" in run.data.metrics
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(tracker.run_id, "checkpoint")}
    assert artifacts == {"checkpoint/model.pt"}


def test_wav2vec2_backend_trains_and_evaluates_through_the_same_interfaces(tiny_studio, tmp_path):
    tiny_w2v = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                "conv_dim": [16, 16, 16, 16], "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2}
    cfg = tiny_cfg(backend="wav2vec2_ctc", model=tiny_w2v, max_frames=200_000)
    result = train(cfg, load_split(tiny_studio / "train"), load_split(tiny_studio / "dev"), tmp_path)
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.model.name == "wav2vec2_ctc" and loaded.model.cfg.hidden_size == 32
    report = evaluate(Recognizer.load(str(result.checkpoint)), load_split(tiny_studio / "test_seen"))
    assert report.overall.n == len(load_split(tiny_studio / "test_seen"))
    assert 0.0 <= report.overall.exact_match <= 1.0
    with pytest.raises(NotImplementedError, match="does not support streaming"):
        Recognizer.load(str(result.checkpoint)).stream()


@pytest.mark.slow
def test_ddp_with_torchrun_needs_no_code_change(tiny_studio, tmp_path):
    """Two CPU processes (gloo) under torchrun run the same entry point as a single process."""
    script = (
        "import sys; from asr.train import TrainConfig, train; from collection.manifest import load_split; "
        f"cfg = TrainConfig(model={TINY_CONFORMER!r}, max_minutes=0, max_steps=3, max_frames=2000, "
        "speed_factors=(1.0,), eval_every_steps=3, dev_limit=2); "
        f"train(cfg, load_split({str(tiny_studio / 'train')!r}), load_split({str(tiny_studio / 'dev')!r}), "
        f"{str(tmp_path)!r})"
    )
    (tmp_path / "entry.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29631",
         str(tmp_path / "entry.py")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.meta["step"] == 3
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())
