"""Quality control on ingest: is this audio (and its transcript) fit to keep?

:func:`decode` turns any accepted container (WAV/FLAC/OGG through libsndfile; WebM/Opus from
the browser's MediaRecorder through PyAV) into 16 kHz mono float32; :func:`measure` computes
the signal figures; :func:`check` compares them with :class:`QcConfig` and returns the first
failed rule. Reasons are short stable codes (stored with each rejection) plus a sentence.

:func:`decode` never trusts a header for allocation: :func:`read_wav_header` compares a WAV's chunk
sizes with the bytes present, a declared length above ``max_seconds`` is refused before decoding,
and a length the header leaves open (streamed WAV, FLAC without a sample count, WebM) is enforced
while decoding. Its errors are :class:`DecodeError` (an ``AudioError`` with a ``reason``), which the
device API (:mod:`serving.audio_input`) turns into HTTP statuses.
"""

from __future__ import annotations

import io
import struct
from dataclasses import asdict, dataclass

import numpy as np
import soundfile as sf

from asr.audio import SAMPLE_RATE, AudioError

# Reason codes, in the order the rules run.
REASONS = ("undecodable", "sample_rate", "too_short", "too_long", "clipping", "silence", "low_snr",
           "bad_text", "duplicate", "erased")
FRAME = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms


@dataclass(frozen=True)
class QcConfig:
    """Thresholds. Durations in seconds, SNR in dB, ratios in [0, 1]."""

    min_sample_rate: int = 16000  # narrow-band audio (8 kHz) cannot be upsampled into wide-band
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    max_clipping: float = 0.01
    max_silence: float = 0.95
    min_snr_db: float = 3.0
    max_chars_per_second: float = 25.0


@dataclass(frozen=True)
class Decoded:
    wav: np.ndarray  # (samples,) float32 at 16 kHz
    original_sample_rate: int
    channels: int


@dataclass(frozen=True)
class Measures:
    duration: float
    clipping: float
    silence: float
    snr_db: float
    original_sample_rate: int
    channels: int

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


class QcError(ValueError):
    """A rule failed; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str, measures: Measures | None = None):
        super().__init__(message)
        self.reason = reason
        self.measures = measures


class DecodeError(AudioError):
    """An :class:`AudioError` with a stable ``reason`` (see :data:`DECODE_REASONS`) for callers that
    answer differently per problem (the device API's status codes); the message says what was wrong."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# DecodeError reasons: not audio at all; a broken container; data shorter than its header says;
# longer than the caller's limit; NaN/inf samples; an encoding or file nothing here can decode.
DECODE_REASONS = ("empty", "not_audio", "corrupt", "truncated", "too_long", "not_finite", "undecodable")
MAX_SANE_RATE = 768_000  # a header above this is corrupt, not hi-res
UNKNOWN_FRAMES = 2**62  # libsndfile reports SF_COUNT_MAX frames when a header leaves the length open


def _resample(wav: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return wav
    from scipy.signal import resample_poly

    g = np.gcd(sr, SAMPLE_RATE)
    return resample_poly(wav, SAMPLE_RATE // g, sr // g).astype(np.float32)


# Containers PyAV may open (FFmpeg demuxer names): the browser's WebM, Ogg/Opus, MP3, MP4/M4A, and FLAC
# whose header leaves the length open. Anything else FFmpeg could guess (playlists, images, …) is
# refused before demuxing.
AV_FORMATS = ("matroska", "webm", "ogg", "mp3", "mov", "mp4", "m4a", "flac")


def _decode_av(data: bytes, max_seconds: float) -> tuple[np.ndarray, int, int]:
    """Decode with FFmpeg, stopping once ``max_seconds`` are exceeded, so memory stays bounded
    whatever the container claims: a few KB of tiny packets can expand to hours."""
    import av

    limit = max_seconds * SAMPLE_RATE
    try:
        with av.open(io.BytesIO(data)) as container:
            if not set(container.format.name.split(",")) & set(AV_FORMATS):
                raise DecodeError("not_audio", f"container {container.format.name!r} is not accepted; use WAV, "
                                               "FLAC, OGG, WebM, MP3 or MP4 audio")
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise DecodeError("not_audio", "the file has no audio stream")
            channels = stream.codec_context.channels or 1
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks, rate, total = [], stream.codec_context.sample_rate or SAMPLE_RATE, 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total > limit:
                    raise DecodeError("too_long", f"lasts more than {max_seconds:.0f} s; the limit is "
                                                  f"{max_seconds:.0f} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.error.FFmpegError, StopIteration, ValueError) as e:
        raise DecodeError("undecodable", f"not a readable audio file ({e})") from e
    if not chunks:
        raise DecodeError("undecodable", "contains no audio samples")
    wav = np.concatenate(chunks).astype(np.float32)
    if not np.isfinite(wav).all():
        raise DecodeError("not_finite", "contains NaN or infinite samples")
    return wav, rate, channels


# WAVE format tags whose data is one fixed-size block per frame (PCM, IEEE float, A-law, µ-law), so the
# data chunk's size gives the length; compressed encodings declare it in a 'fact' chunk instead.
WAV_BLOCK_TAGS = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "µ-law"}
WAV_EXTENSIBLE = 0xFFFE
STREAMED_SIZES = (0, 0xFFFFFFFF)  # what a writer that cannot seek back leaves in a size field


@dataclass(frozen=True)
class WavHeader:
    """What a RIFF/WAVE header declares (nothing is decoded to get it).

    ``frames``: samples per channel the header declares, None when it leaves the length open (a
    streamed WAV whose data size is 0 / 0xFFFFFFFF, or a compressed one without a 'fact' chunk);
    ``present_frames``: whole frames of data actually in the file (None for compressed encodings)."""

    format_tag: int
    channels: int
    sample_rate: int
    block_align: int
    bits: int
    frames: int | None
    present_frames: int | None


def read_wav_header(data: bytes) -> WavHeader | None:
    """Walk a RIFF/WAVE file's chunks up to the data chunk; None when ``data`` is not RIFF/WAVE.

    Raises DecodeError('corrupt') when the chunk structure is broken (no fmt or data chunk, a chunk
    longer than the file, data before fmt). Sizes are checked against the bytes present, never trusted
    for allocation: a header may say anything."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt, fact = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body, left = pos + 8, len(data) - pos - 8
        name = cid.decode("latin-1")
        if cid == b"data":
            if fmt is None:
                raise DecodeError("corrupt", "the WAV 'data' chunk comes before its 'fmt ' chunk")
            return _wav_header(fmt, fact, size, left)
        if size > left:
            raise DecodeError("corrupt", f"the WAV chunk {name!r} declares {size} bytes but only {left} follow")
        if cid == b"fmt ":
            if size < 16:
                raise DecodeError("corrupt", f"the WAV 'fmt ' chunk has {size} bytes; it needs at least 16")
            fmt = data[body:body + size]
        elif cid == b"fact" and size >= 4:
            fact = int.from_bytes(data[body:body + 4], "little")
        pos = body + size + (size & 1)  # chunks are word-aligned
    if fmt is None:
        raise DecodeError("corrupt", "the WAV file has no 'fmt ' chunk (the header is cut short)")
    raise DecodeError("corrupt", "the WAV file has no 'data' chunk")


def _wav_header(fmt: bytes, fact: int | None, data_size: int, present: int) -> WavHeader:
    tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAV_EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")  # the sub-format GUID starts with the plain tag
    if tag in WAV_BLOCK_TAGS:
        streamed = data_size in STREAMED_SIZES
        frames = None if streamed or not align else data_size // align
        present_frames = (present if streamed else min(present, data_size)) // align if align else 0
        return WavHeader(tag, channels, rate, align, bits, frames, present_frames)
    return WavHeader(tag, channels, rate, align, bits, fact, None)


def check_wav_header(header: WavHeader, max_seconds: float) -> None:
    """Refuse what the header alone proves unusable, before libsndfile reads a sample."""
    if header.channels < 1:
        raise DecodeError("corrupt", "the WAV header declares 0 channels")
    if not 1 <= header.sample_rate <= MAX_SANE_RATE:
        raise DecodeError("corrupt", f"the WAV header declares a sample rate of {header.sample_rate} Hz")
    if header.block_align < 1 and header.format_tag in WAV_BLOCK_TAGS:
        raise DecodeError("corrupt", "the WAV header declares a block align (bytes per frame) of 0")
    if header.frames is not None and header.frames > max_seconds * header.sample_rate:
        raise DecodeError("too_long", f"header says it lasts {header.frames / header.sample_rate:.0f} s; the limit "
                                      f"is {max_seconds:.0f} s")
    if header.frames is not None and header.present_frames is not None and \
            header.present_frames < header.frames * 0.99:
        raise DecodeError("truncated", f"audio data is truncated: header says {header.frames} samples, file "
                                       f"holds {header.present_frames}")


def decode(data: bytes, max_seconds: float = 600.0) -> Decoded:
    """Any supported container → 16 kHz mono. Raises :class:`DecodeError` (an AudioError) naming what
    was wrong.

    Memory stays bounded by ``max_seconds`` whatever the file claims: a length the header declares is
    checked before a sample is decoded, and a length it leaves open is enforced while decoding."""
    if not data:
        raise DecodeError("empty", "audio is empty (0 bytes)")
    header = read_wav_header(data)
    if header is not None:
        check_wav_header(header, max_seconds)
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        if header is not None:
            name = WAV_BLOCK_TAGS.get(header.format_tag, f"format tag {header.format_tag:#06x}")
            raise DecodeError("undecodable", f"the WAV encoding ({name}, {header.bits} bits) cannot be decoded "
                                             f"({getattr(e, 'error_string', e)}); send 16-bit PCM") from e
        info = None
    if info is None or info.frames >= UNKNOWN_FRAMES:  # WebM/Opus, MP4, …; FLAC of open length
        wav, rate, channels = _decode_av(data, max_seconds)
        return Decoded(wav, rate, channels)
    if info.frames <= 0:
        raise DecodeError("empty", "contains no samples")
    if info.frames > max_seconds * info.samplerate:  # refuse cheaply before decoding hours of audio
        raise DecodeError("too_long", f"lasts {info.frames / info.samplerate:.0f} s; the limit is "
                                      f"{max_seconds:.0f} s")
    wav = _read_frames(data, info.frames)
    if not np.isfinite(wav).all():
        raise DecodeError("not_finite", "contains NaN or infinite samples")
    sr = info.samplerate
    mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr < QcConfig.min_sample_rate:
        return Decoded(mono.astype(np.float32), sr, wav.shape[1])  # check() rejects it by rule
    return Decoded(_resample(mono, sr), sr, wav.shape[1])


def _read_frames(data: bytes, frames: int, block: int = 1 << 16) -> np.ndarray:
    """(frames, channels) float32 through libsndfile, block by block, so a decoder error partway
    (a FLAC cut off mid-frame) still tells how far the data went."""
    blocks, got = [], 0
    with sf.SoundFile(io.BytesIO(data)) as f:
        while got < frames:
            try:
                part = f.read(min(block, frames - got), dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise DecodeError("truncated", f"audio data is truncated or corrupt after {got} of the {frames} "
                                               f"samples the header declares ({getattr(e, 'error_string', e)})") from e
            if not len(part):
                break
            blocks.append(part)
            got += len(part)
        channels = f.channels
    if got < frames * 0.99:
        raise DecodeError("truncated", f"audio data is truncated: header says {frames} samples, file holds {got}")
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)


def frame_energies_db(wav: np.ndarray) -> np.ndarray:
    """(frames,) RMS level in dBFS of 25 ms frames every 10 ms."""
    if len(wav) < FRAME:
        wav = np.pad(wav, (0, FRAME - len(wav)))
    # A strided view (no copy of 40 overlapping samples per frame): ~0.1 ms for a 2 s command, cheap
    # enough for serving to measure every request.
    frames = np.lib.stride_tricks.sliding_window_view(wav, FRAME)[::HOP].astype(np.float64)
    rms = np.sqrt(np.einsum("ij,ij->i", frames, frames) / FRAME)
    return 20 * np.log10(rms + 1e-10)


def _speech_frames(db: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Energy VAD over frame levels: (speech mask, speech level dBFS, noise floor dBFS). Frames within
    30 dB of the loudest (and above -55 dBFS) are speech; the noise floor is the quietest 10 % of frames;
    the speech level is the mean power of the speech frames (the noise floor when there is none)."""
    speech = (db > db.max() - 30) & (db > -55)
    noise_db = float(np.percentile(db, 10))
    speech_db = float(10 * np.log10(np.mean(10 ** (db[speech] / 10)))) if speech.any() else noise_db
    return speech, speech_db, noise_db


def speech_levels(wav: np.ndarray) -> tuple[float, float]:
    """(speech level dBFS, estimated SNR dB) of (samples,) float32 at 16 kHz: the same measurement as
    :func:`measure` (serving records it for every request, so drift and triage compare like with like)."""
    _, speech_db, noise_db = _speech_frames(frame_energies_db(wav))
    return speech_db, speech_db - noise_db


def measure(decoded: Decoded) -> Measures:
    """Energy VAD (:func:`_speech_frames`); SNR is speech-frame power over the noise floor."""
    wav = decoded.wav
    speech, speech_db, noise_db = _speech_frames(frame_energies_db(wav))
    return Measures(duration=len(wav) / SAMPLE_RATE, clipping=float(np.mean(np.abs(wav) >= 0.999)),
                    silence=float(1 - speech.mean()), snr_db=speech_db - noise_db,
                    original_sample_rate=decoded.original_sample_rate, channels=decoded.channels)


def check_text(text: str | None, duration: float, language: str, cfg: QcConfig) -> str | None:
    """The normalised transcript, or None when there is none. Raises QcError('bad_text')."""
    if text is None:
        return None
    from asr.text import get_language_pack

    pack = get_language_pack(language)
    normalized = pack.normalize(text)
    if not normalized.strip():
        raise QcError("bad_text", f"transcript {text!r} is empty after normalisation")
    letters = len(normalized.replace(" ", ""))
    if duration > 0 and letters / duration > cfg.max_chars_per_second:
        raise QcError("bad_text", f"transcript has {letters} characters for {duration:.1f} s of audio "
                                  f"(more than {cfg.max_chars_per_second:.0f}/s): wrong transcript?")
    tok = pack.tokenizer_factory([normalized])
    if tok.unk_id in tok.encode(normalized):
        raise QcError("bad_text", f"transcript {text!r} has characters outside the {language!r} alphabet")
    return normalized


def check(decoded: Decoded, cfg: QcConfig = QcConfig()) -> Measures:
    """Run the signal rules; raises QcError with the first failed rule's reason."""
    if decoded.original_sample_rate < cfg.min_sample_rate:
        raise QcError("sample_rate", f"sample rate is {decoded.original_sample_rate} Hz; at least "
                                     f"{cfg.min_sample_rate} Hz is needed")
    m = measure(decoded)
    rules = (
        ("too_short", m.duration < cfg.min_seconds, f"lasts {m.duration:.2f} s; at least {cfg.min_seconds} s"),
        ("too_long", m.duration > cfg.max_seconds, f"lasts {m.duration:.1f} s; at most {cfg.max_seconds} s"),
        ("clipping", m.clipping > cfg.max_clipping,
         f"{m.clipping:.1%} of samples are clipped; at most {cfg.max_clipping:.0%}"),
        ("silence", m.silence > cfg.max_silence, f"{m.silence:.0%} silence: no speech found"),
        ("low_snr", m.snr_db < cfg.min_snr_db, f"estimated SNR {m.snr_db:.1f} dB; at least {cfg.min_snr_db} dB"),
    )
    for reason, failed, message in rules:
        if failed:
            raise QcError(reason, message, m)
    return m
