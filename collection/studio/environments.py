"""Acoustic environments: every noise and room response is generated from the rng (no files).

Each :class:`Environment` turns clean speech into (speech reference, noise) and mixes them
at a signal-to-noise ratio drawn from its range. SNR is defined over the whole utterance
window: ``10·log10(Σ speech² / Σ noise²)`` in dB, where "speech" is the reference after the
room (reverberant speech for far_field).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import signal


@dataclass(frozen=True)
class Mix:
    """audio = speech + noise, all float arrays of the same length; snr_db in dB."""

    audio: np.ndarray
    speech: np.ndarray
    noise: np.ndarray
    snr_db: float


def power(x: np.ndarray) -> float:
    """Mean square (linear power)."""
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def measured_snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    return 10.0 * np.log10(power(speech) / max(power(noise), 1e-20))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> Mix:
    """Scale ``noise`` so that speech-to-noise power is ``snr_db`` dB, and add it."""
    if len(noise) != len(speech):
        raise ValueError(f"speech and noise lengths differ: {len(speech)} vs {len(noise)} samples")
    ps, pn = power(speech), power(noise)
    gain = np.sqrt(ps / (pn * 10 ** (snr_db / 10.0))) if ps > 0 and pn > 0 else 0.0
    scaled = (noise * gain).astype(np.float64)
    return Mix(speech + scaled, speech.astype(np.float64), scaled, float(snr_db))


def _colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    m = sp_fft.next_fast_len(max(n, 2), real=True)  # FFT sizes with small prime factors only
    spectrum = sp_fft.rfft(rng.standard_normal(m))
    f = sp_fft.rfftfreq(m)
    f[0] = f[1]
    x = sp_fft.irfft(spectrum / f ** (exponent / 2.0), m)[:n]
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _bandpass(x: np.ndarray, lo: float, hi: float, sr: int, order: int = 4) -> np.ndarray:
    sos = signal.butter(order, [lo, min(hi, 0.45 * sr)], btype="band", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _envelope(n: int, sr: int, rate_hz: float, rng: np.random.Generator, floor: float = 0.0) -> np.ndarray:
    """Smooth random envelope in [floor, 1] with fluctuations around ``rate_hz`` Hz."""
    sos = signal.butter(2, rate_hz, fs=sr, output="sos")
    e = signal.sosfilt(sos, rng.standard_normal(n + sr // 2))[sr // 2:]
    e = np.clip(e / (np.std(e) + 1e-12), 0, None)
    return floor + (1 - floor) * e / (e.max() + 1e-12)


def _speech_like(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One far-away talker: a buzz at a gliding F0 through random formant resonances, switched
    on and off at a syllabic (~4 Hz) rate."""
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 240) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    buzz = signal.sawtooth(2 * np.pi * np.cumsum(f0) / sr)
    x = np.zeros(n)
    for lo, hi in ((300, 900), (900, 2500), (2500, 3500)):
        fc = rng.uniform(lo, hi)
        x += _bandpass(buzz, fc * 0.85, fc * 1.15, sr, order=2)
    return x * _envelope(n, sr, rng.uniform(3.0, 5.0), rng)


def _music_like(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Chords of harmonic tones whose notes change every 0.25-0.6 s."""
    out = np.zeros(n)
    step = int(sr * rng.uniform(0.25, 0.6))
    t = np.arange(step) / sr
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    for start in range(0, n, step):
        seg = np.zeros(step)
        for semitone in rng.choice([0, 3, 4, 7, 10, 12], size=3, replace=False):
            f = 220.0 * 2 ** ((int(rng.integers(-5, 8)) + semitone) / 12)
            seg += sum(np.sin(2 * np.pi * f * k * t) / k**1.5 for k in (1, 2, 3))
        out[start:start + step] = (seg * fade)[: n - start]
    return out


def synthetic_rir(sr: int, rt60: float, rng: np.random.Generator, drr_db: float = 0.0) -> np.ndarray:
    """Room impulse response: direct path + exponentially decaying noise tail (−60 dB after
    ``rt60`` seconds); ``drr_db`` = direct-to-reverberant energy ratio in dB."""
    n = max(int(sr * rt60), 16)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: -60 dB
    tail = signal.sosfilt(signal.butter(2, 5000, fs=sr, output="sos"), tail)  # walls absorb highs
    tail[: int(0.0025 * sr)] = 0.0  # first reflection after ~2.5 ms
    tail *= np.sqrt(10 ** (-drr_db / 10.0) / (np.sum(tail**2) + 1e-12))
    tail[0] = 1.0
    return tail


class Environment:
    """Base class: quiet-room tone. Subclasses override :meth:`noise` (and :meth:`room`)."""

    name = "quiet"
    snr_db_range: tuple[float, float] = (30.0, 40.0)

    def room(self, speech: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        """The speech as it reaches the microphone; the identity by default."""
        return speech

    def noise(self, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of this environment's background noise (any level)."""
        hum = np.sin(2 * np.pi * 60.0 * np.arange(n) / sr + rng.uniform(0, 2 * np.pi))
        return _colored_noise(n, rng, 1.0) + 0.2 * hum

    def render(self, speech: np.ndarray, sr: int, rng: np.random.Generator,
               snr_db: float | None = None) -> Mix:
        """Put ``speech`` (float, ``sr`` Hz) in this environment at ``snr_db`` (drawn from
        :attr:`snr_db_range` when None)."""
        if snr_db is None:
            snr_db = float(rng.uniform(*self.snr_db_range))
        reference = self.room(np.asarray(speech, dtype=np.float64), sr, rng)
        return mix_at_snr(reference, self.noise(len(reference), sr, rng), snr_db)


class Quiet(Environment):
    """A quiet living room: faint pink room tone and mains hum."""


class TV(Environment):
    """A television on: several distant talkers plus music, through a small TV loudspeaker."""

    name = "tv"
    snr_db_range = (5.0, 15.0)

    def noise(self, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
        talkers = sum(_speech_like(n, sr, rng) for _ in range(int(rng.integers(2, 5))))
        talkers /= np.sqrt(power(talkers)) + 1e-12
        music = _music_like(n, sr, rng)
        music /= np.sqrt(power(music)) + 1e-12
        return _bandpass(talkers + rng.uniform(0.3, 1.0) * music, 150, 6000, sr)


class Kitchen(Environment):
    """Running water (fluctuating broadband noise) and impulsive dish clatter."""

    name = "kitchen"
    snr_db_range = (5.0, 15.0)

    def noise(self, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
        water = _bandpass(_colored_noise(n, rng, 0.3), 400, 7000, sr) * _envelope(n, sr, 1.5, rng, floor=0.5)
        water /= np.sqrt(power(water)) + 1e-12
        clatter = np.zeros(n)
        for _ in range(rng.poisson(1.5 * n / sr)):
            start = int(rng.integers(0, n))
            length = min(int(sr * rng.uniform(0.05, 0.2)), n - start)
            t = np.arange(length) / sr
            ring = sum(np.sin(2 * np.pi * rng.uniform(1500, 6000) * t) for _ in range(3))
            burst = (ring + rng.standard_normal(length)) * np.exp(-t / rng.uniform(0.01, 0.05))
            clatter[start:start + length] += rng.uniform(2.0, 6.0) * burst
        return water + clatter


class FarField(Environment):
    """Speaking from across the room: a synthetic reverberant room response plus mild noise."""

    name = "far_field"
    snr_db_range = (15.0, 25.0)

    def room(self, speech: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        rir = synthetic_rir(sr, rt60=float(rng.uniform(0.3, 0.9)), rng=rng, drr_db=float(rng.uniform(-6.0, 3.0)))
        return signal.fftconvolve(speech, rir)[: len(speech)]

    def noise(self, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
        return _colored_noise(n, rng, 1.5)


ENVIRONMENTS: dict[str, Environment] = {env.name: env for env in (Quiet(), TV(), Kitchen(), FarField())}


def get_environment(name: str) -> Environment:
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}; valid: {sorted(ENVIRONMENTS)}")
    return ENVIRONMENTS[name]
