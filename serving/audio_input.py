"""A device's uploaded command → 16 kHz mono, with the limits checked before anything is decoded.

Three steps, cheapest first, each refusing with an :class:`InputError` (a stable ``reason`` code, an
HTTP ``status`` and a sentence the firmware team can act on):

1. **Sniff** the first bytes: anything that is not one of the accepted containers (WAV, FLAC, Ogg,
   WebM/Matroska, MP3, MP4) is refused as ``not_audio`` (415) without being handed to a decoder.
2. **Read the header only**: a RIFF/WAVE header is walked by :func:`collection.qc.read_wav_header`
   (sizes are compared with the bytes present, never trusted), other containers by libsndfile's
   ``sf.info``. Channels, sample rate and declared length are checked against :class:`InputLimits`,
   so a 40-byte file that claims hours, zero channels or a 0 Hz rate is refused in microseconds
   without allocating its samples.
3. **Decode** with :func:`collection.qc.decode`, which stops at ``max_seconds`` while decoding (a
   small compressed file, or a header that leaves the length open, can expand to hours), detects
   truncated data and NaN samples. Memory is bounded by the limit, not by what the file claims.

Status codes: 415 not audio at all; 413 longer than a command may be (declared or decoded; the body
size limit, also 413, is enforced earlier by :class:`serving.api.limits.BodyLimit`); 422 audio that
is there but unusable (empty, corrupt header, truncated, wrong rate or channel count, NaN samples,
undecodable encoding, too short).
"""

from __future__ import annotations

import codecs
import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from asr.audio import SAMPLE_RATE
from collection.qc import UNKNOWN_FRAMES, DecodeError, check_wav_header, decode, read_wav_header

ACCEPTED = "WAV (16 kHz 16-bit mono preferred), FLAC, Ogg (Opus/Vorbis), WebM/Opus, MP3 or MP4/M4A"

# InputError reason → HTTP status (the device API answers these; every other refusal is 422).
# collection.qc.DecodeError reasons are a subset of InputError's and keep their names.
STATUS = {"not_audio": 415, "too_long": 413}


@dataclass(frozen=True)
class InputLimits:
    max_seconds: float = 15.0  # a voice command; longer audio is not a command
    min_seconds: float = 0.1  # shorter than a syllable: a stray tap, not a command
    min_sample_rate: int = 16000  # narrow-band audio cannot be made wide-band
    max_sample_rate: int = 48000
    max_channels: int = 2


class InputError(ValueError):
    """``reason``: empty / not_audio / corrupt / truncated / channels / sample_rate / too_long / too_short /
    not_finite / undecodable; ``status``: the HTTP status for it (:data:`STATUS`, else 422)."""

    def __init__(self, reason: str, message: str, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = STATUS.get(reason, 422) if status is None else status


def sniff_container(data: bytes) -> str | None:
    """The container the magic bytes announce (wav / flac / ogg / webm / mp4 / mp3), or None."""
    head = data[:12]
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska / WebM
        return "webm"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "mp3"  # an ID3 tag, or an MPEG audio frame sync with a layer set (ADTS AAC has none)
    return None


def _describe(data: bytes) -> str:
    """What a body that is not audio looks like, for the error message."""
    if len(data) < 12:
        return f"only {len(data)} bytes"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "a PNG image"
    if data[:3] == b"\xff\xd8\xff":
        return "a JPEG image"
    try:  # incremental: a character cut at byte 512 is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:512]).lstrip().lower()
    except UnicodeDecodeError:
        return f"starts with bytes {data[:4].hex(' ')}"
    return "HTML" if text.startswith(("<!doctype html", "<html")) else "text"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds:.1f} s"


def _check_format(channels: int, rate: int, frames: int | None, limits: InputLimits) -> None:
    """Channels, rate and (when known) length against the limits, in that order."""
    if not 1 <= channels <= limits.max_channels:
        raise InputError("channels", f"the audio has {channels} channel(s); send mono (1 channel), or at most "
                                     f"{limits.max_channels}")
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise InputError("sample_rate", f"the sample rate is {rate} Hz; send {limits.min_sample_rate} Hz "
                                        f"(accepted: {limits.min_sample_rate}-{limits.max_sample_rate} Hz)")
    if frames is not None and frames > limits.max_seconds * rate:
        raise InputError("too_long", f"the header declares {_duration(frames / rate)} of audio; a command may "
                                     f"last at most {limits.max_seconds:g} s")


def _check_header(data: bytes, container: str, limits: InputLimits) -> None:
    if container == "wav":
        try:
            header = read_wav_header(data)
        except DecodeError as e:
            raise InputError("corrupt", f"corrupt WAV header: {e}") from e
        if header is not None:  # None: RF64, whose sizes live in a ds64 chunk libsndfile reads
            _check_format(header.channels, header.sample_rate, header.frames, limits)
            try:  # block align, data present vs declared
                check_wav_header(header, limits.max_seconds)
            except DecodeError as e:
                raise _refusal(e, container, limits) from e
            return
    try:
        info = sf.info(io.BytesIO(data))  # reads the header only
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return  # not a libsndfile container (WebM, MP4, …) or a broken one: decode() decides, bounded
    frames = None if info.frames >= UNKNOWN_FRAMES else info.frames
    _check_format(info.channels, info.samplerate, frames, limits)


def _refusal(error: DecodeError, container: str, limits: InputLimits) -> InputError:
    if error.reason == "too_long":
        return InputError("too_long", f"the audio lasts more than {limits.max_seconds:g} s (decoding stopped "
                                  f"there); a command may last at most {limits.max_seconds:g} s")
    return InputError(error.reason, f"the {container.upper()} audio is unusable: {error}")


def read_command_audio(data: bytes, limits: InputLimits = InputLimits()) -> np.ndarray:
    """(samples,) float32 at 16 kHz. Raises InputError."""
    if not data:
        raise InputError("empty", "the request has no audio (0 bytes); send the command as the body or as a "
                                  "multipart file part named 'audio'")
    container = sniff_container(data)
    if container is None:
        raise InputError("not_audio", f"the body is not an audio file ({_describe(data)}); send {ACCEPTED}")
    _check_header(data, container, limits)
    try:
        decoded = decode(data, max_seconds=limits.max_seconds)
    except DecodeError as e:
        raise _refusal(e, container, limits) from e
    # Containers libsndfile cannot read (WebM, MP4) only show rate and channels once decoded.
    _check_format(decoded.channels, decoded.original_sample_rate, None, limits)
    seconds = len(decoded.wav) / SAMPLE_RATE
    if seconds < limits.min_seconds:
        raise InputError("too_short", f"the audio lasts {seconds:.2f} s; a command needs at least "
                                      f"{limits.min_seconds:g} s")
    return decoded.wav
