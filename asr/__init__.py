"""voiceloop's speech-recognition core: audio, text, models, streaming, decoding, training, evaluation.

    from asr import Recognizer, load_audio
    rec = Recognizer.load("data/runs/baseline/model.pt", decoder="beam")
    print(rec.transcribe(load_audio("command.wav")).text)

MLflow access (``asr.registry``) is imported on demand: it costs ~120 MB and serving a local
checkpoint does not need it.

Names load on first use (PEP 562), so tools that only need text or audio helpers
(``asr.text``, ``asr.audio``: the catalog, the web pages, most CLI commands) do not pay the
~2.5 s of importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_EXPORTS = {
    "SAMPLE_RATE": "audio", "AudioError": "audio", "load_audio": "audio",
    "BACKENDS": "backends", "LoadedModel": "backends", "build_model": "backends", "load_checkpoint": "backends",
    "save_checkpoint": "backends",
    "BeamSearchDecoder": "decoding", "Hypothesis": "decoding", "greedy_decode": "decoding",
    "EvalReport": "evaluate", "evaluate": "evaluate", "score": "evaluate",
    "Recognizer": "inference",
    "NgramLM": "lm",
    "get_language_pack": "text", "make_tokenizer": "text",
    "TrainConfig": "train", "TrainResult": "train", "load_train_config": "train", "train": "train",
}
__all__ = [
    "BACKENDS",
    "SAMPLE_RATE",
    "AudioError",
    "BeamSearchDecoder",
    "EvalReport",
    "Hypothesis",
    "LoadedModel",
    "NgramLM",
    "Recognizer",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "evaluate",
    "get_language_pack",
    "greedy_decode",
    "load_audio",
    "load_checkpoint",
    "load_train_config",
    "make_tokenizer",
    "save_checkpoint",
    "score",
    "train",
]

if TYPE_CHECKING:
    from .audio import SAMPLE_RATE, AudioError, load_audio
    from .backends import BACKENDS, LoadedModel, build_model, load_checkpoint, save_checkpoint
    from .decoding import BeamSearchDecoder, Hypothesis, greedy_decode
    from .evaluate import EvalReport, evaluate, score
    from .inference import Recognizer
    from .lm import NgramLM
    from .text import get_language_pack, make_tokenizer
    from .train import TrainConfig, TrainResult, load_train_config, train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'asr' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
