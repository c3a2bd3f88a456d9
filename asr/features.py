"""Log-mel features and the augmentations used in training.

Frames are computed with ``center=False``: frame ``i`` covers samples ``[i*hop, i*hop + n_fft)``.
That makes a frame depend only on its own samples, so a streaming front end that computes frames
as audio arrives produces exactly the frames the offline front end computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio

from .audio import SAMPLE_RATE


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = SAMPLE_RATE  # Hz
    n_fft: int = 400  # samples (25 ms)
    hop_length: int = 160  # samples (10 ms)
    n_mels: int = 80


class LogMel(torch.nn.Module):
    """wav: (..., samples) float in [-1, 1] → log-mel: (..., frames, n_mels)."""

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            center=False,
            power=2.0,
        )

    def num_frames(self, num_samples: int) -> int:
        if num_samples < self.cfg.n_fft:
            return 0
        return 1 + (num_samples - self.cfg.n_fft) // self.cfg.hop_length

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.shape[-1] < self.cfg.n_fft:
            return wav.new_zeros(*wav.shape[:-1], 0, self.cfg.n_mels)
        return torch.log(self.mel(wav) + 1e-6).transpose(-1, -2)


@dataclass(frozen=True)
class SpecAugmentConfig:
    freq_masks: int = 2
    freq_width: int = 15  # mel bins
    time_masks: int = 2
    time_width_ratio: float = 0.05  # of the utterance's frames
    # Vocal-tract-length-style warp: stretch the mel axis by a factor in [1 - warp, 1 + warp], so formants of
    # a new speaker's voice fall where the model has seen some before.
    warp: float = 0.1


def spec_augment(feats: torch.Tensor, cfg: SpecAugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask random frequency bands and time spans of one utterance. feats: (frames, n_mels); returns a copy."""
    frames, n_mels = feats.shape
    feats = warp_frequency(feats, 1 + cfg.warp * (2 * float(torch.rand(1, generator=generator)) - 1))
    fill = feats.mean()
    for _ in range(cfg.freq_masks):
        width = int(torch.randint(0, cfg.freq_width + 1, (1,), generator=generator))
        start = int(torch.randint(0, max(1, n_mels - width), (1,), generator=generator))
        feats[:, start : start + width] = fill
    max_width = max(1, int(frames * cfg.time_width_ratio))
    for _ in range(cfg.time_masks):
        width = int(torch.randint(0, max_width + 1, (1,), generator=generator))
        start = int(torch.randint(0, max(1, frames - width), (1,), generator=generator))
        feats[start : start + width] = fill
    return feats


def warp_frequency(feats: torch.Tensor, factor: float) -> torch.Tensor:
    """Resample (frames, n_mels) along the mel axis: bin b takes the value at b / factor (linear interpolation)."""
    n_mels = feats.shape[1]
    pos = (torch.arange(n_mels, dtype=feats.dtype) / factor).clamp(0, n_mels - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n_mels - 1)
    frac = pos - lo
    return feats[:, lo] * (1 - frac) + feats[:, hi] * frac


def speed_perturb(wav: torch.Tensor, factor: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Play ``wav`` (samples,) ``factor`` times faster (pitch moves with it, as in Kaldi's speed perturbation)."""
    if factor == 1.0:
        return wav
    return torchaudio.functional.resample(wav, orig_freq=round(sample_rate * factor), new_freq=sample_rate)
