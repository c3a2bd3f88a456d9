"""MLflow registry against a real MLflow store (SQLite backend, local artifacts)."""

import pytest
import torch

from asr.backends import build_model, save_checkpoint
from asr.inference import Recognizer
from asr.registry import MlflowTracker, alias_version, register, resolve_checkpoint, set_alias
from asr.text import JamoTokenizer


def trained_run(exp, tmp_path, seed: int) -> str:
    torch.manual_seed(seed)
    model = build_model("conformer_ctc", {"d_model": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 1,
                                          "conv_kernel": 3}, len(JamoTokenizer()))
    save_checkpoint(tmp_path / "model.pt", model, JamoTokenizer(), "ko")
    tracker = MlflowTracker.start(exp, run_name=f"seed{seed}")
    tracker.log_artifact(tmp_path / "model.pt", "checkpoint")
    tracker.finish()
    return tracker.run_id


def test_aliases_move_and_resolve(mlflow_store, tmp_path):
    exp, _ = mlflow_store
    first = trained_run(exp, tmp_path, 1)
    second = trained_run(exp, tmp_path, 2)
    v1 = register(first, "asr-test", alias="champion")
    v2 = register(second, "asr-test", alias="challenger")
    assert (v1, v2) == ("1", "2")
    assert register(first, "asr-test") == "1"  # the same run again: no duplicate version
    assert alias_version("asr-test", "champion") == "1"
    assert alias_version("asr-test", "challenger") == "2"

    path, label = resolve_checkpoint("models:/asr-test@champion")
    assert path.name == "model.pt" and label == "asr-test/1"
    recognizer = Recognizer.load("models:/asr-test@champion")
    assert recognizer.version == "asr-test/1"

    set_alias("asr-test", "champion", v2)  # promote
    assert alias_version("asr-test", "champion") == "2"
    assert Recognizer.load("models:/asr-test@champion").version == "asr-test/2"
    set_alias("asr-test", "champion", v1)  # roll back
    assert alias_version("asr-test", "champion") == "1"


def test_clear_errors(mlflow_store, tmp_path):
    exp, _ = mlflow_store
    with pytest.raises(ValueError, match="unknown alias 'prod'"):
        set_alias("asr-test", "prod", "1")
    with pytest.raises(ValueError, match="no such registered model"):
        resolve_checkpoint("models:/nope@champion")
    empty = MlflowTracker.start(exp, run_name="no-checkpoint")
    with pytest.raises(ValueError, match="has no checkpoint/model.pt artifact"):
        register(empty.run_id, "asr-test")
    with pytest.raises(ValueError, match="not a registry URI"):
        resolve_checkpoint(str(tmp_path / "model.pt"))
    with pytest.raises(FileNotFoundError):
        Recognizer.load(str(tmp_path / "missing.pt"))
    assert alias_version("asr-test", "challenger") in {"2", None}
