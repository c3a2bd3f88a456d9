"""Recognizer: a loaded model + tokenizer + decoder — what CLI, evaluation and serving call.

``Recognizer.load("models:/voiceloop-asr@champion")`` works as well as a local ``model.pt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import check_waveform
from .backends import LoadedModel, load_checkpoint
from .data import pad_batch
from .decoding import BeamSearchDecoder, GreedyDecoder, Hypothesis, greedy_decode
from .text import get_language_pack

DECODERS = {"greedy": GreedyDecoder, "beam": BeamSearchDecoder}


def make_decoder(name: str, tokenizer, **options):
    try:
        cls = DECODERS[name]
    except KeyError as e:
        raise ValueError(f"unknown decoder {name!r}; available: {', '.join(DECODERS)}") from e
    return cls(tokenizer, **options)


@dataclass
class Recognizer:
    loaded: LoadedModel
    decoder: object
    version: str = "local"

    @classmethod
    def load(cls, uri: str, decoder: str = "greedy", version: str | None = None, **decoder_options) -> Recognizer:
        """``uri``: a checkpoint path, ``runs:/<id>/checkpoint`` or ``models:/<name>@<alias>``."""
        if str(uri).startswith(("models:/", "runs:/")):
            from .registry import resolve_checkpoint  # imports mlflow (~120 MB): only when needed

            path, label = resolve_checkpoint(uri)
        else:
            path, label = Path(uri), Path(uri).name
        loaded = load_checkpoint(path)
        decoder_options.setdefault("lm", loaded.lm)
        return cls(loaded, make_decoder(decoder, loaded.tokenizer, **decoder_options), version or label)

    @property
    def normalize(self):
        return get_language_pack(self.loaded.language).normalize

    @torch.no_grad()
    def log_probs(self, wavs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per utterance (frames, vocab) log-probs."""
        model = self.loaded.model
        inputs = [model.prepare(check_waveform(w)) for w in wavs]
        x, lengths = pad_batch(inputs)
        out, out_lengths = model(x, lengths)
        return [lp[:n] for lp, n in zip(out, out_lengths, strict=True)]

    def transcribe_batch(self, wavs: Sequence[np.ndarray]) -> list[Hypothesis]:
        return [self.decoder.decode(lp) for lp in self.log_probs(wavs)]

    def transcribe(self, wav: np.ndarray) -> Hypothesis:
        return self.transcribe_batch([wav])[0]

    def stream(self) -> RecognizerStream:
        if not hasattr(self.loaded.model, "stream"):
            raise NotImplementedError(f"backend {self.loaded.model.name!r} does not support streaming")
        return RecognizerStream(self)


class RecognizerStream:
    """Audio in as it arrives; a partial hypothesis after every chunk, the final one at ``finish``."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.recognizer = recognizer
        self.encoder = recognizer.loaded.model.stream()
        self._log_probs: list[torch.Tensor] = []

    def accept(self, samples: np.ndarray) -> Hypothesis:
        self._log_probs.append(self.encoder.accept(samples))
        return greedy_decode(torch.cat(self._log_probs), self.recognizer.loaded.tokenizer)

    def finish(self) -> Hypothesis:
        self._log_probs.append(self.encoder.finish())
        return self.recognizer.decoder.decode(torch.cat(self._log_probs))
