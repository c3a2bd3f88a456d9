"""Synthetic speakers: who talks (age band, gender, dialect) and how that sounds.

A :class:`Persona` fixes an eSpeak voice variant, speaking rate, pitch and pitch range, and
for older speakers (60s, 70s+) the acoustic marks of age: slower speech, a shifted F0
(up for men, down for women), vocal tremor (5-8 Hz pitch + amplitude modulation), jitter
and reduced bandwidth (low-pass around 3.4 kHz).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import signal

from collection.studio.espeak import VoiceSettings

AGE_BANDS = ("20s", "30s", "40s", "50s", "60s", "70s+")
GENDERS = ("male", "female")
OLDER_AGE_BANDS = ("60s", "70s+")

# eSpeak variants (espeak-ng-data/voices/!v) by gender; older speakers draw from their own pool.
VOICE_POOLS: dict[tuple[str, bool], tuple[str, ...]] = {
    ("male", False): ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Lee", "sandro", "travis",
                      "michel", "miguel", "victor", "antonio"),
    ("female", False): ("f1", "f2", "f3", "f4", "f5", "Alicia", "Annie", "Andrea", "anika", "belinda", "linda",
                        "steph", "steph2", "steph3"),
    ("male", True): ("grandpa", "croak", "m1", "m8", "Denis"),
    ("female", True): ("grandma", "aunty", "f1", "f4"),
}


@dataclass(frozen=True)
class AgeProfile:
    """Ranges a persona of one age band is drawn from. rate in words/minute; pitch shift and
    range on eSpeak's 0-100 scale; tremor in Hz; depths as fractions; low-pass in Hz."""

    rate_wpm: tuple[int, int]
    pitch_shift: tuple[int, int] = (0, 0)  # for men; women get the negated shift for older bands
    pitch_range: tuple[int, int] = (45, 75)
    word_gap: tuple[int, int] = (0, 0)
    tremor_hz: tuple[float, float] = (0.0, 0.0)
    tremor_depth: tuple[float, float] = (0.0, 0.0)
    am_depth: tuple[float, float] = (0.0, 0.0)
    jitter: tuple[float, float] = (0.0, 0.0)
    lowpass_hz: tuple[float, float] | None = None


AGE_PROFILES: dict[str, AgeProfile] = {
    "20s": AgeProfile(rate_wpm=(175, 205)),
    "30s": AgeProfile(rate_wpm=(165, 195)),
    "40s": AgeProfile(rate_wpm=(155, 185), pitch_range=(40, 70)),
    "50s": AgeProfile(rate_wpm=(145, 175), pitch_range=(40, 65)),
    "60s": AgeProfile(rate_wpm=(125, 150), pitch_shift=(4, 9), pitch_range=(30, 55), word_gap=(0, 2),
                      tremor_hz=(5.0, 7.0), tremor_depth=(0.01, 0.025), am_depth=(0.05, 0.12),
                      jitter=(0.004, 0.010), lowpass_hz=(3600.0, 4200.0)),
    "70s+": AgeProfile(rate_wpm=(105, 130), pitch_shift=(6, 12), pitch_range=(25, 45), word_gap=(1, 4),
                       tremor_hz=(5.0, 8.0), tremor_depth=(0.02, 0.04), am_depth=(0.10, 0.20),
                       jitter=(0.008, 0.018), lowpass_hz=(3200.0, 3600.0)),
}

# Regional prosody on top of the words: (rate multiplier, pitch-range offset). Gyeongsang
# speech has a wide, pitch-accented melody; Chungcheong is proverbially slow.
DIALECT_PROSODY: dict[str, tuple[float, int]] = {
    "standard": (1.0, 0), "gyeongsang": (1.05, 15), "jeolla": (0.95, 8), "chungcheong": (0.88, -5),
}
BASE_PITCH = {"male": (38, 55), "female": (45, 65)}


@dataclass(frozen=True)
class Persona:
    """One synthetic speaker. voice: eSpeak variant; rate: words/minute; pitch, pitch_range:
    eSpeak 0-100; word_gap: 10 ms units; tremor_hz: Hz; tremor_depth: peak F0 deviation as
    a fraction; am_depth: amplitude-modulation depth 0-1; jitter: std of the random F0
    perturbation as a fraction; lowpass_hz: bandwidth limit in Hz (None = full band)."""

    id: str
    age_band: str
    gender: str
    dialect: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int = 0
    tremor_hz: float = 0.0
    tremor_depth: float = 0.0
    am_depth: float = 0.0
    jitter: float = 0.0
    lowpass_hz: float | None = None

    def voice_settings(self, language: str) -> VoiceSettings:
        return VoiceSettings(language=language, variant=self.voice, rate=self.rate, pitch=self.pitch,
                             pitch_range=self.pitch_range, word_gap=self.word_gap)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Persona:
        return cls(**d)

    def apply(self, audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        """Age-related voice effects on ``audio`` (float, ``sample_rate`` Hz); a no-op for
        personas without tremor, jitter or a low-pass."""
        y = audio
        if self.tremor_depth > 0 or self.jitter > 0:
            y = _warp_pitch(y, sample_rate, self.tremor_hz, self.tremor_depth, self.jitter, rng)
        if self.am_depth > 0:
            t = np.arange(len(y)) / sample_rate
            phase = rng.uniform(0, 2 * np.pi)
            y = y * (1.0 + self.am_depth * np.sin(2 * np.pi * self.tremor_hz * t + phase)) / (1.0 + self.am_depth)
        if self.lowpass_hz:
            sos = signal.butter(8, self.lowpass_hz, btype="low", fs=sample_rate, output="sos")
            y = signal.sosfilt(sos, y)
        return y.astype(np.float32)


def _warp_pitch(x: np.ndarray, sr: int, rate_hz: float, depth: float, jitter: float,
                rng: np.random.Generator) -> np.ndarray:
    """Time-varying resampling: reading speed 1 + depth*sin(2π·rate_hz·t) + slow noise shifts
    F0 (and formants slightly) by that factor: tremor at ``rate_hz`` Hz plus jitter."""
    n = len(x)
    if n < 2:
        return x
    t = np.arange(n) / sr
    speed = 1.0 + depth * np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 2 * np.pi))
    if jitter > 0:
        # Band-limited (< 30 Hz) Gaussian noise with standard deviation `jitter`.
        noise = rng.standard_normal(n)
        sos = signal.butter(2, 30.0, fs=sr, output="sos")
        noise = signal.sosfilt(sos, noise)
        speed = speed + jitter * noise / (np.std(noise) + 1e-12)
    position = np.concatenate([[0.0], np.cumsum(np.clip(speed, 0.5, 1.5))[:-1]])
    position = position[position <= n - 1]
    return np.interp(position, np.arange(n), x)


def voice_pool(gender: str, age_band: str) -> tuple[str, ...]:
    return VOICE_POOLS[(gender, age_band in OLDER_AGE_BANDS)]


def sample_persona(persona_id: str, age_band: str, gender: str, dialect: str, rng: np.random.Generator,
                   voices: tuple[str, ...] | None = None) -> Persona:
    """Draw a persona of the given age band, gender and dialect (all choices from ``rng``)."""
    if age_band not in AGE_PROFILES:
        raise ValueError(f"unknown age band {age_band!r}; valid: {list(AGE_BANDS)}")
    if gender not in GENDERS:
        raise ValueError(f"unknown gender {gender!r}; valid: {list(GENDERS)}")
    p = AGE_PROFILES[age_band]
    rate_mult, range_offset = DIALECT_PROSODY.get(dialect, (1.0, 0))
    pool = voices or voice_pool(gender, age_band)
    uni = lambda r: float(rng.uniform(*r))  # noqa: E731
    integer = lambda r: int(rng.integers(r[0], r[1] + 1))  # noqa: E731
    shift = integer(p.pitch_shift) * (1 if gender == "male" else -1)
    return Persona(
        id=persona_id,
        age_band=age_band,
        gender=gender,
        dialect=dialect,
        voice=str(pool[int(rng.integers(len(pool)))]),
        rate=int(round(integer(p.rate_wpm) * rate_mult)),
        pitch=int(np.clip(integer(BASE_PITCH[gender]) + shift, 0, 100)),
        pitch_range=int(np.clip(integer(p.pitch_range) + range_offset, 0, 100)),
        word_gap=integer(p.word_gap),
        tremor_hz=round(uni(p.tremor_hz), 3),
        tremor_depth=round(uni(p.tremor_depth), 4),
        am_depth=round(uni(p.am_depth), 4),
        jitter=round(uni(p.jitter), 4),
        lowpass_hz=round(uni(p.lowpass_hz), 1) if p.lowpass_hz else None,
    )
