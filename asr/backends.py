"""Acoustic-model backends behind one interface, and checkpoints that rebuild their own model.

A backend is an ``nn.Module`` with:
  ``name``                          registry key, stored in the checkpoint
  ``cfg``                           frozen dataclass with ``from_dict``; saved inside the checkpoint
  ``prepare(wav) -> Tensor``        one utterance's input, (frames, ...) — computed once and cached
  ``augment(inputs, generator)``    training-time augmentation of one prepared input (returns a copy)
  ``forward(inputs, lengths)``      (B, T, ...) padded inputs → ((B, T', vocab) log-probs, (B,) lengths)
  ``stream()``                      optional: a streaming encoder with ``accept(samples)`` / ``finish()``

Training, evaluation and serving only talk to this interface, so adding a backend is one entry in
``BACKENDS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from .lm import NgramLM
from .text import Tokenizer, get_language_pack, tokenizer_from_dict


def _conformer():
    from .model import ConformerConfig, ConformerCTC

    return ConformerCTC, ConformerConfig


def _wav2vec2():
    from .hf_backend import Wav2Vec2Backend, Wav2Vec2Config

    return Wav2Vec2Backend, Wav2Vec2Config


# name -> loader of (model class, config class); loaders keep transformers out of the import path until used.
BACKENDS = {"conformer_ctc": _conformer, "wav2vec2_ctc": _wav2vec2}


def backend_classes(name: str):
    try:
        return BACKENDS[name]()
    except KeyError as e:
        raise ValueError(f"unknown model backend {name!r}; available: {', '.join(sorted(BACKENDS))}") from e


def build_model(name: str, overrides: dict[str, Any] | None, vocab_size: int) -> torch.nn.Module:
    """A fresh model of backend ``name``; ``overrides`` are config fields (nested dicts allowed)."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive (the tokenizer's vocabulary size), got {vocab_size}")
    model_cls, cfg_cls = backend_classes(name)
    base = dataclasses.asdict(cfg_cls())
    for key, value in (overrides or {}).items():
        if key not in base:
            raise ValueError(f"unknown {name} config field {key!r}; valid: {', '.join(sorted(base))}")
        base[key] = {**base[key], **value} if isinstance(base[key], dict) else value
    base["vocab_size"] = vocab_size
    return model_cls(cfg_cls.from_dict(base))


@dataclasses.dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Tokenizer
    language: str
    meta: dict[str, Any]  # training step, manifest hash, run id, ... whatever the trainer stored
    lm: NgramLM | None = None  # token n-gram LM of the training transcripts, for beam search


def save_checkpoint(path: str | Path, model: torch.nn.Module, tokenizer: Tokenizer, language: str,
                    lm: NgramLM | None = None, **meta) -> str:
    """Write a self-describing checkpoint atomically; returns the sha256 of the file's bytes."""
    model = getattr(model, "module", model)  # unwrap DDP
    blob = {
        "backend": model.name,
        "config": dataclasses.asdict(model.cfg),
        "state_dict": model.state_dict(),
        "tokenizer": tokenizer.to_dict(),
        "language": language,
        "lm": lm.to_dict() if lm else None,
        "meta": meta,
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    data = buf.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model a checkpoint describes (backend + config inside it) and load its weights."""
    try:
        blob = torch.load(str(path), map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a voiceloop checkpoint ({e})") from e
    if not isinstance(blob, dict) or "backend" not in blob:
        raise ValueError(f"{path}: not a voiceloop checkpoint (no 'backend' entry)")
    model_cls, cfg_cls = backend_classes(blob["backend"])
    model = model_cls(cfg_cls.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    get_language_pack(blob["language"])  # fail early on a language this install does not know
    lm = NgramLM.from_dict(blob["lm"]) if blob.get("lm") else None
    return LoadedModel(model, tokenizer_from_dict(blob["tokenizer"]), blob["language"], blob.get("meta", {}), lm)
