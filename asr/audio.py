"""Audio input: read a file or bytes into a 16 kHz mono float32 waveform, or say clearly why not.

Everything downstream (features, models, serving) assumes ``SAMPLE_RATE`` mono audio in [-1, 1].
We refuse rather than silently fix input that a device should not be sending (wrong rate, stereo):
a silent resample would hide a firmware bug and skew accuracy metrics.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
MAX_SECONDS = 60.0


class AudioError(ValueError):
    """The audio cannot be used; the message says what was wrong."""


def load_audio(
    source: str | Path | bytes,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float = MAX_SECONDS,
) -> np.ndarray:
    """Read WAV/FLAC/OGG from a path or bytes.

    Returns:
        wav: (samples,) float32 in [-1, 1] at ``sample_rate`` Hz.

    Raises:
        AudioError: empty, undecodable or truncated file, wrong sample rate, more than one channel,
            longer than ``max_seconds``, or non-finite samples.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        if not source:
            raise AudioError("audio is empty (0 bytes)")
        handle: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: audio is empty (0 bytes)")
        handle = str(path)
    try:
        # Check the header before decoding so a tiny file that claims hours is refused cheaply.
        info = sf.info(handle)
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{name}: not a readable audio file ({e})") from e
    if info.samplerate != sample_rate:
        raise AudioError(f"{name}: sample rate is {info.samplerate} Hz; expected {sample_rate} Hz")
    if info.channels != 1:
        raise AudioError(f"{name}: has {info.channels} channels; expected mono (1 channel)")
    if info.frames <= 0:
        raise AudioError(f"{name}: contains no samples")
    if info.frames > max_seconds * sample_rate:
        raise AudioError(f"{name}: lasts {info.frames / sample_rate:.1f} s; the limit is {max_seconds:.0f} s")
    try:
        wav, _ = sf.read(handle, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{name}: audio data is truncated or corrupt ({e})") from e
    return check_waveform(wav, name=name)


def check_waveform(wav: np.ndarray, *, name: str = "<waveform>") -> np.ndarray:
    """Validate an in-memory waveform: (samples,) finite floats. Returns it as float32."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioError(f"{name}: expected a mono (samples,) waveform, got shape {wav.shape}")
    if wav.size == 0:
        raise AudioError(f"{name}: contains no samples")
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    return wav.astype(np.float32, copy=False)


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV."""
    sf.write(str(path), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16")


def trim_silence(
    wav: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold_db: float = -35.0, margin_s: float = 0.1
) -> np.ndarray:
    """Cut leading/trailing stretches whose 20 ms RMS is ``threshold_db`` below the loudest frame, keeping
    ``margin_s`` seconds on each side. Training uses it so compute goes to speech; noise louder than the
    threshold is kept, so the model still learns to ignore it."""
    frame = sample_rate // 50
    n = len(wav) // frame
    if n < 3:
        return wav
    rms = np.sqrt(np.mean(wav[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > threshold_db)
    margin = int(margin_s * sample_rate)
    start = max(0, loud[0] * frame - margin)
    end = min(len(wav), (loud[-1] + 1) * frame + margin)
    return wav[start:end]
