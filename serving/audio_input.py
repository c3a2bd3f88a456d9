"""A device's uploaded command → 16 kHz mono, with the limits checked before anything is decoded.

The header is read first (libsndfile reads only the header for ``sf.info``): channels, sample rate
and declared length are checked against :class:`InputLimits`, so a 40-byte file that claims hours,
zero channels or a 0 Hz rate is refused in microseconds without allocating its samples. Only then
is the audio decoded (:func:`collection.qc.decode`, which also stops compressed streams at the
duration limit while decoding and detects truncated WAV data). Every refusal is an
:class:`InputError` with a reason code and a sentence the firmware team can act on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from asr.audio import AudioError
from collection.qc import decode


@dataclass(frozen=True)
class InputLimits:
    max_seconds: float = 15.0  # a voice command; longer audio is not a command
    min_sample_rate: int = 16000  # narrow-band audio cannot be made wide-band
    max_sample_rate: int = 48000
    max_channels: int = 2


class InputError(ValueError):
    """``reason``: empty / undecodable / sample_rate / channels / too_long / too_short; ``status``: HTTP."""

    def __init__(self, reason: str, message: str, status: int = 422):
        super().__init__(message)
        self.reason, self.status = reason, status


def _check_header(data: bytes, limits: InputLimits) -> None:
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return  # not a libsndfile container (WebM/Opus, MP3, …): decode() checks while decoding
    if not 1 <= info.channels <= limits.max_channels:
        raise InputError("channels", f"audio has {info.channels} channel(s); send 1 (mono) or at most "
                                     f"{limits.max_channels}")
    if not limits.min_sample_rate <= info.samplerate <= limits.max_sample_rate:
        raise InputError("sample_rate", f"sample rate is {info.samplerate} Hz; send {limits.min_sample_rate} Hz "
                                        f"(accepted: {limits.min_sample_rate}-{limits.max_sample_rate} Hz)")
    if info.frames > limits.max_seconds * info.samplerate:
        raise InputError("too_long", f"audio lasts {info.frames / info.samplerate:.1f} s; a command may last at "
                                     f"most {limits.max_seconds:.0f} s", status=413)


def read_command_audio(data: bytes, limits: InputLimits = InputLimits()) -> np.ndarray:
    """(samples,) float32 at 16 kHz. Raises InputError."""
    if not data:
        raise InputError("empty", "the request has no audio (0 bytes)")
    _check_header(data, limits)
    try:
        decoded = decode(data, max_seconds=limits.max_seconds)
    except AudioError as e:
        message = str(e)
        reason, status = ("too_long", 413) if "limit is" in message else ("undecodable", 422)
        raise InputError(reason, f"audio refused: {message}", status) from e
    if decoded.original_sample_rate < limits.min_sample_rate:
        raise InputError("sample_rate", f"sample rate is {decoded.original_sample_rate} Hz; send "
                                        f"{limits.min_sample_rate} Hz")
    if decoded.channels > limits.max_channels:
        raise InputError("channels", f"audio has {decoded.channels} channels; send mono")
    if len(decoded.wav) < 0.1 * 16000:
        raise InputError("too_short", f"audio lasts {len(decoded.wav) / 16000:.2f} s; at least 0.1 s is needed")
    return decoded.wav
