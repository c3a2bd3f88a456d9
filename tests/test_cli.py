"""The ``voiceloop`` command end to end, as a user runs it: synth → train → eval → register → transcribe."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

VOICELOOP = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "voiceloop")


def run(args: list[str], data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "VOICELOOP_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    exe = VOICELOOP if Path(VOICELOOP).exists() else "voiceloop"
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    data = tmp_path / "data"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"d_model": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 1, "conv_kernel": 3},
        "max_minutes": 0, "max_steps": 2, "speed_factors": [1.0], "eval_every_steps": 2, "max_frames": 3000,
    }))
    run(["synth", "--plan", "tiny"], data)
    assert (data / "studio" / "train" / "supervisions.jsonl").exists()

    out = run(["train", "--config", str(config)], data).stdout
    run_id = out.split("MLflow run:")[1].split()[0]
    assert (data / "runs" / "tiny" / "model.pt").exists()
    again = run(["train", "--config", str(config), "--resume"], data).stdout  # re-runnable: finished → skipped
    assert again.split("MLflow run:")[1].split()[0] == run_id

    eval_args = ["eval", "--model", str(data / "runs" / "tiny" / "model.pt"), "--split", "test_seen",
                 "--split", "test_heldout", "--run-id", run_id]
    out = run(eval_args, data).stdout
    assert "dialect=gyeongsang" in out and "overall" in out
    run(eval_args, data)  # the same evaluation again adds no duplicate metric points
    client = MlflowClient(f"sqlite:///{(data / 'mlflow.db').resolve()}")
    assert len(client.get_metric_history(run_id, "test_seen.cer")) == 1
    assert client.get_run(run_id).data.params["dataset.manifest_hash"]
    report = json.loads((data / "eval" / "test_heldout.json").read_text())
    assert set(report["slices"]) >= {"dialect", "age_band", "gender", "environment"}

    assert "is now @champion" in run(["register", "--run-id", run_id, "--alias", "champion"], data).stdout
    assert "version 1 is now @champion" in run(["register", "--run-id", run_id, "--alias", "champion"], data).stdout
    wav = sorted((data / "studio" / "audio").glob("*.wav"))[0]
    line = json.loads(run(["transcribe", str(wav)], data).stdout.strip().splitlines()[-1])
    assert line["model_version"] == "voiceloop-asr/1" and 0.0 <= line["confidence"] <= 1.0

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00")
    proc = run(["transcribe", str(bad)], data, check=False)
    assert proc.returncode == 1 and f"{bad}: not a readable audio file" in proc.stderr

    # The collection loop on the same data dir: plan → studio → catalog → label → dataset version.
    run(["plan", "collect", "--plan", "tiny"], data)
    assert "0 accepted" in run(["plan", "collect", "--plan", "tiny"], data).stdout  # nothing left to fill
    run(["label", "tasks", "create", "--double-share", "0.5"], data)
    run(["label", "prelabel", "--model", "models:/voiceloop-asr@champion"], data)
    run(["label", "users", "add", "sim-a", "--simulated"], data)
    run(["label", "users", "add", "sim-b", "--simulated"], data)
    run(["label", "users", "add", "sim-r", "--role", "reviewer", "--simulated"], data)
    run(["label", "assign", "--labelers", "sim-a,sim-b"], data)
    run(["label", "simulate", "--user", "sim-a", "--error-rate", "0"], data)
    run(["label", "simulate", "--user", "sim-b", "--error-rate", "0"], data)
    run(["label", "simulate-review", "--user", "sim-r"], data)
    assert "sim-a*" in run(["label", "report"], data).stdout
    first = re.findall(r"ds-[0-9a-f]{12}", run(["dataset", "build", "--name", "cli"], data).stdout)
    again = re.findall(r"ds-[0-9a-f]{12}", run(["dataset", "build", "--name", "cli"], data).stdout)
    assert first and first[0] == again[0]  # same inputs, same version
    status = run(["plan", "status", "--plan", "tiny", "--plot", str(tmp_path / "plan.png")], data).stdout
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG" and "tiny" in status
    run(["plan", "gaps", "--plan", "tiny", "--out", str(tmp_path / "gaps.yaml")], data)
    assert yaml.safe_load((tmp_path / "gaps.yaml").read_text())["name"].startswith("tiny")
    assert "accepted" in run(["qc", "report"], data).stdout
