"""Builders for the device-API and worker tests: a tiny checkpoint, the app serving it, devices with keys."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from fastapi import FastAPI

from asr.backends import build_model, save_checkpoint
from asr.text import JamoTokenizer
from collection.db import connect
from serving.api.main import create_app
from serving.devices import register_device
from serving.model_manager import ModelManager
from voiceloop.settings import Settings

TINY = {"d_model": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 1, "conv_kernel": 3}


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained 1-layer conformer: real decoding and streaming, meaningless text, ~30 ms to load."""
    torch.manual_seed(seed)
    model = build_model("conformer_ctc", TINY, vocab_size=len(JamoTokenizer())).eval()
    save_checkpoint(path, model, JamoTokenizer(), "ko")
    return path


def device_app(data_dir: Path, catalog_url: str, models: ModelManager | None = None, **overrides: object) -> FastAPI:
    """The real app on a real catalog, answering with ``models`` (a tiny local checkpoint by default)."""
    if models is None:
        models = ModelManager.from_path(str(tiny_checkpoint(data_dir / "tiny.pt")))
    settings = Settings(data_dir=data_dir, catalog_url=catalog_url, **overrides)
    return create_app(settings, plan="tiny", models=models)


def add_device(catalog_url: str, device_id: str = "dev-1", device_type: str = "speaker") -> str:
    """Register a device; returns its key."""
    with connect(catalog_url)() as session:
        key = register_device(session, device_id, device_type).key
        session.commit()
    return key


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def tone_wav(seconds: float = 1.0, sample_rate: int = 16000, channels: int = 1, fmt: str = "WAV",
             quiet_s: float = 0.0) -> bytes:
    """A voiced-sounding test signal (a 220 Hz tone with harmonics) as file bytes; ``quiet_s`` of its
    ``seconds`` at each end are near-silent, so QC measures a real SNR (and keeps it)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wav = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 5)).astype(np.float32)
    edge = int(quiet_s * sample_rate)
    if edge:
        wav[:edge] *= 0.001
        wav[-edge:] *= 0.001
    if channels > 1:
        wav = np.stack([wav] * channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, wav, sample_rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def pcm16(wav: np.ndarray) -> bytes:
    return (np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes()


def stream_until_final(ws, audio: np.ndarray, chunk: int = 1600) -> dict | None:  # noqa: ANN001 - a test WebSocket
    """Send ``audio`` (float32, 16 kHz) in PCM16 chunks of ``chunk`` samples, reading one message after
    each, until the server sends its final (returned) or the audio runs out (None): no end marker."""
    for i in range(0, len(audio), chunk):
        ws.send_bytes(pcm16(audio[i:i + chunk]))
        message = ws.receive_json()
        if message["type"] == "final":
            return message
    return None


def register_tiny(experiment_id: str, tmp_path: Path, model_name: str, seed: int, alias: str | None = None) -> str:
    """Log a tiny checkpoint as an MLflow run and register it under ``model_name``; returns the version."""
    from asr.registry import MlflowTracker, register

    (tmp_path / f"seed-{seed}").mkdir(exist_ok=True)
    path = tiny_checkpoint(tmp_path / f"seed-{seed}" / "model.pt", seed)  # the registry's checkpoint file name
    tracker = MlflowTracker.start(experiment_id, run_name=f"tiny-{seed}")
    tracker.log_artifact(path, "checkpoint")
    tracker.finish()
    return register(tracker.run_id, model_name, alias=alias)
