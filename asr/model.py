"""Conformer-CTC acoustic model built on ``torchaudio.models.Conformer``, offline and streaming.

Streaming design (chunked attention, as in WeNet's U2): encoder frames are grouped into chunks of
``chunk_frames``; a frame attends to every frame of its own chunk and of the ``left_chunks``
chunks before it, never to later chunks; the depthwise convolution is made causal. The offline
forward applies exactly this mask, so a streaming pass that caches each layer's last
``left_chunks * chunk_frames`` attention inputs and its last ``kernel - 1`` convolution inputs
computes the same numbers chunk by chunk (up to float rounding).

The front end stacks ``stack`` consecutive 10 ms log-mel frames into one encoder frame
(40 ms by default) instead of strided convolutions, so no encoder frame looks past its chunk.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from .features import FeatureConfig, LogMel, SpecAugmentConfig, spec_augment


@dataclass(frozen=True)
class ConformerConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    stack: int = 4  # log-mel frames per encoder frame (4 x 10 ms = 40 ms)
    d_model: int = 144
    n_heads: int = 4
    ffn_dim: int = 576
    n_layers: int = 8
    conv_kernel: int = 15  # encoder frames; causal
    dropout: float = 0.1
    chunk_frames: int = 8  # encoder frames per streaming chunk (8 x 40 ms = 320 ms)
    left_chunks: int = 4  # chunks of left context each chunk attends to
    vocab_size: int = 0
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)

    @classmethod
    def from_dict(cls, d: dict) -> ConformerConfig:
        d = dict(d)
        d["features"] = FeatureConfig(**d.get("features", {}))
        d["spec_augment"] = SpecAugmentConfig(**d.get("spec_augment", {}))
        return cls(**d)

    @property
    def frame_seconds(self) -> float:
        return self.stack * self.features.hop_length / self.features.sample_rate


def chunk_attention_mask(frames: int, chunk: int, left_chunks: int, device=None) -> torch.Tensor:
    """(frames, frames) bool, True where query ``q`` may NOT attend key ``k`` (MultiheadAttention's convention)."""
    idx = torch.arange(frames, device=device) // chunk
    q, k = idx[:, None], idx[None, :]
    return (k > q) | (k < q - left_chunks)


@dataclass
class LayerCache:
    """What one layer must remember between streaming chunks."""

    attn: torch.Tensor  # (frames<=left context, B, D) normalised attention inputs of earlier chunks
    conv: torch.Tensor  # (B, D, kernel-1) GLU outputs feeding the causal depthwise conv


class ConformerCTC(torch.nn.Module):
    """feats (B, mel_frames, n_mels) → log_probs (B, frames, vocab), frames = mel_frames // stack."""

    name = "conformer_ctc"

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.featurizer = LogMel(cfg.features)
        self.input_norm = torch.nn.LayerNorm(cfg.features.n_mels)
        self.frontend = torch.nn.Linear(cfg.features.n_mels * cfg.stack, cfg.d_model)
        self.encoder = torchaudio.models.Conformer(
            input_dim=cfg.d_model,
            num_heads=cfg.n_heads,
            ffn_dim=cfg.ffn_dim,
            num_layers=cfg.n_layers,
            depthwise_conv_kernel_size=cfg.conv_kernel,
            dropout=cfg.dropout,
        )
        for layer in self.encoder.conformer_layers:
            # Causal: we pad on the left ourselves (see _conv_module).
            layer.conv_module.sequential[2].padding = (0,)
        self.head = torch.nn.Linear(cfg.d_model, cfg.vocab_size)

    # -- inputs -------------------------------------------------------------------------------------------
    def prepare(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One utterance's model input: wav (samples,) → log-mel (mel_frames, n_mels)."""
        with torch.no_grad():
            return self.featurizer(torch.as_tensor(wav, dtype=torch.float32))

    def augment(self, inputs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return spec_augment(inputs, self.cfg.spec_augment, generator)

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        return input_lengths // self.cfg.stack

    def _embed(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, mel_frames, n_mels) → (B, frames, d_model); trailing mel frames that do not fill a stack are dropped."""
        b, t, m = feats.shape
        frames = t // self.cfg.stack
        x = self.input_norm(feats[:, : frames * self.cfg.stack])
        return self.frontend(x.reshape(b, frames, m * self.cfg.stack))

    # -- offline --------------------------------------------------------------------------------------------
    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._embed(feats)
        out_lengths = self.output_lengths(lengths)
        frames = x.shape[1]
        pad = torch.arange(frames, device=x.device)[None, :] >= out_lengths[:, None]  # (B, frames)
        mask = chunk_attention_mask(frames, self.cfg.chunk_frames, self.cfg.left_chunks, x.device)
        x = x.transpose(0, 1)  # (T, B, D) as torchaudio's layers expect
        for layer in self.encoder.conformer_layers:
            x, _ = self._layer(layer, x, pad, mask, None)
            # Padded frames must stay finite: masked keys still multiply their values by 0.
            x = x.masked_fill(pad.T[:, :, None], 0.0)
        return self.head(x.transpose(0, 1)).log_softmax(-1), out_lengths

    # -- one layer, shared by offline and streaming ---------------------------------------------------------
    def _layer(self, layer, x, pad, mask, cache: LayerCache | None) -> tuple[torch.Tensor, LayerCache]:
        """x: (T, B, D). Mirrors torchaudio ConformerLayer.forward, adding the chunk mask and caches."""
        residual = x
        x = layer.ffn1(x) * 0.5 + residual
        residual = x
        q = layer.self_attn_layer_norm(x)
        kv = q if cache is None else torch.cat([cache.attn, q], dim=0)
        a, _ = layer.self_attn(q, kv, kv, key_padding_mask=pad, attn_mask=mask, need_weights=False)
        x = layer.self_attn_dropout(a) + residual
        y, conv_cache = self._conv_module(layer.conv_module, x, None if cache is None else cache.conv)
        x = x + y
        residual = x
        x = layer.ffn2(x) * 0.5 + residual
        x = layer.final_layer_norm(x)
        left = self.cfg.left_chunks * self.cfg.chunk_frames
        return x, LayerCache(attn=kv[-left:] if left else kv[:0], conv=conv_cache)

    def _conv_module(self, conv, x, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal version of torchaudio's _ConvolutionModule. x: (T, B, D) → (T, B, D), new state.

        The pointwise (kernel-1) convolutions run as matrix products on (T, B, D): same weights and
        result as the module's Conv1d, without its per-call overhead on short streaming chunks."""
        seq = conv.sequential
        y = F.linear(conv.layer_norm(x), seq[0].weight.squeeze(-1), seq[0].bias)
        y = F.glu(y, dim=-1).permute(1, 2, 0)  # (B, D, T)
        k = self.cfg.conv_kernel - 1
        if state is None:
            state = y.new_zeros(y.shape[0], y.shape[1], k)
        y = torch.cat([state, y], dim=2)
        new_state = y[:, :, y.shape[2] - k :]
        y = seq[4](seq[3](seq[2](y)))  # depthwise conv (no padding: causal), norm, SiLU
        y = F.linear(y.permute(2, 0, 1), seq[5].weight.squeeze(-1), seq[5].bias)
        return seq[6](y), new_state  # dropout

    # -- streaming ------------------------------------------------------------------------------------------
    def stream(self) -> StreamingEncoder:
        return StreamingEncoder(self)


class StreamingEncoder:
    """Feed audio as it arrives; get CTC log-probs for each completed chunk.

    ``accept(samples)`` returns (frames, vocab) log-probs for the chunks that became complete;
    ``finish()`` flushes the last, partial chunk. Concatenated, they equal the offline forward.
    """

    def __init__(self, model: ConformerCTC) -> None:
        self.model = model
        cfg = model.cfg
        self._hop = cfg.features.hop_length
        self._n_fft = cfg.features.n_fft
        self._chunk_mel = cfg.chunk_frames * cfg.stack
        self._samples = torch.zeros(0)
        self._mel = torch.zeros(0, cfg.features.n_mels)
        self._caches: list[LayerCache | None] = [None] * cfg.n_layers

    @torch.inference_mode()
    def accept(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        self._samples = torch.cat([self._samples, torch.as_tensor(samples, dtype=torch.float32)])
        frames = self.model.featurizer.num_frames(len(self._samples))
        if frames:
            # Keep the samples that later frames still need (windows overlap by n_fft - hop).
            used = (frames - 1) * self._hop + self._n_fft
            self._mel = torch.cat([self._mel, self.model.featurizer(self._samples[:used])])
            self._samples = self._samples[frames * self._hop :]
        out = []
        while len(self._mel) >= self._chunk_mel:
            out.append(self._run(self._mel[: self._chunk_mel]))
            self._mel = self._mel[self._chunk_mel :]
        return torch.cat(out) if out else torch.zeros(0, self.model.cfg.vocab_size)

    @torch.inference_mode()
    def finish(self) -> torch.Tensor:
        usable = (len(self._mel) // self.model.cfg.stack) * self.model.cfg.stack
        out = self._run(self._mel[:usable]) if usable else torch.zeros(0, self.model.cfg.vocab_size)
        self._mel = self._mel[:0]
        return out

    def _run(self, mel: torch.Tensor) -> torch.Tensor:
        model = self.model
        x = model._embed(mel[None]).transpose(0, 1)  # (C, 1, D)
        for i, layer in enumerate(model.encoder.conformer_layers):
            x, self._caches[i] = model._layer(layer, x, None, None, self._caches[i])
        return model.head(x[:, 0]).log_softmax(-1)


def replace_config(cfg: ConformerConfig, **overrides) -> ConformerConfig:
    """dataclasses.replace that also accepts nested dicts for ``features`` / ``spec_augment``."""
    for key in ("features", "spec_augment"):
        if isinstance(overrides.get(key), dict):
            overrides[key] = dataclasses.replace(getattr(cfg, key), **overrides[key])
    return dataclasses.replace(cfg, **overrides)
