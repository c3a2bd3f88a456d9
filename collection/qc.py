"""Quality control on ingest: is this audio (and its transcript) fit to keep?

:func:`decode` turns any accepted container (WAV/FLAC/OGG through libsndfile; WebM/Opus from
the browser's MediaRecorder through PyAV) into 16 kHz mono float32; :func:`measure` computes
the signal figures; :func:`check` compares them with :class:`QcConfig` and returns the first
failed rule. Reasons are short stable codes (stored with each rejection) plus a sentence.
"""

from __future__ import annotations

import io
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


def _resample(wav: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return wav
    from scipy.signal import resample_poly

    g = np.gcd(sr, SAMPLE_RATE)
    return resample_poly(wav, SAMPLE_RATE // g, sr // g).astype(np.float32)


# Containers PyAV may open (FFmpeg demuxer names): the browser's WebM, Ogg/Opus, MP3, MP4/M4A.
# Anything else FFmpeg could guess (playlists, images, …) is refused before demuxing.
AV_FORMATS = ("matroska", "webm", "ogg", "mp3", "mov", "mp4", "m4a")


def _decode_av(data: bytes, max_seconds: float) -> tuple[np.ndarray, int, int]:
    import av

    limit = int(max_seconds * SAMPLE_RATE)
    try:
        with av.open(io.BytesIO(data)) as container:
            if not set(container.format.name.split(",")) & set(AV_FORMATS):
                raise AudioError(f"container {container.format.name!r} is not accepted; use WAV, FLAC, OGG, "
                                 "WebM, MP3 or MP4 audio")
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioError("the file has no audio stream")
            channels = stream.codec_context.channels or 1
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks, rate, total = [], stream.codec_context.sample_rate or SAMPLE_RATE, 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total > limit:  # a few KB of tiny packets can expand to hours: stop early
                    raise AudioError(f"lasts more than {max_seconds:.0f} s; the limit is {max_seconds:.0f} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.error.FFmpegError, StopIteration, ValueError) as e:
        raise AudioError(f"not a readable audio file ({e})") from e
    if not chunks:
        raise AudioError("contains no audio samples")
    return np.concatenate(chunks).astype(np.float32), rate, channels


def _wav_declared_frames(data: bytes) -> int | None:
    """Samples per channel that a WAV header's data chunk declares, or None (not RIFF/WAVE, or a
    streamed WAV whose size field is 0 / 0xFFFFFFFF). libsndfile silently trusts the file size
    instead, so without this a truncated upload would pass as a shorter recording."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, block = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(data):
            block = int.from_bytes(data[pos + 20:pos + 22], "little")  # bytes per frame (all channels)
        if chunk == b"data":
            return size // block if block and size not in (0, 0xFFFFFFFF) else None
        pos += 8 + size + (size & 1)
    return None


def decode(data: bytes, max_seconds: float = 600.0) -> Decoded:
    """Any supported container → 16 kHz mono. Raises AudioError naming what was wrong."""
    if not data:
        raise AudioError("audio is empty (0 bytes)")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        info = None
    if info is None:  # not WAV/FLAC/OGG-Vorbis: try the browser's WebM/Opus via PyAV
        wav, rate, channels = _decode_av(data, max_seconds)
        return Decoded(wav, rate, channels)
    declared = _wav_declared_frames(data)
    if declared is not None and declared > max_seconds * info.samplerate:  # refuse a 10-hour header cheaply
        raise AudioError(f"header says it lasts {declared / info.samplerate:.0f} s; the limit is {max_seconds:.0f} s")
    if declared is not None and info.frames < declared * 0.99:
        raise AudioError(f"audio data is truncated: header says {declared} samples, file holds {info.frames}")
    if info.frames <= 0:
        raise AudioError("contains no samples")
    if info.frames > max_seconds * info.samplerate:  # refuse cheaply before decoding hours of audio
        raise AudioError(f"lasts {info.frames / info.samplerate:.0f} s; the limit is {max_seconds:.0f} s")
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"audio data is truncated or corrupt ({e})") from e
    if len(wav) < info.frames * 0.99:
        raise AudioError(f"audio data is truncated: header says {info.frames} samples, file holds {len(wav)}")
    if not np.isfinite(wav).all():
        raise AudioError("contains NaN or infinite samples")
    mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr < QcConfig.min_sample_rate:
        return Decoded(mono.astype(np.float32), sr, wav.shape[1])  # check() rejects it by rule
    return Decoded(_resample(mono, sr), sr, wav.shape[1])


def frame_energies_db(wav: np.ndarray) -> np.ndarray:
    """(frames,) RMS level in dBFS of 25 ms frames every 10 ms."""
    if len(wav) < FRAME:
        wav = np.pad(wav, (0, FRAME - len(wav)))
    n = 1 + (len(wav) - FRAME) // HOP
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(wav[idx].astype(np.float64) ** 2, axis=1))
    return 20 * np.log10(rms + 1e-10)


def measure(decoded: Decoded) -> Measures:
    """Energy VAD: frames within 30 dB of the loudest (and above -55 dBFS) are speech; SNR is
    speech-frame power over the quietest 10 % of frames (the noise floor)."""
    wav = decoded.wav
    db = frame_energies_db(wav)
    speech = (db > db.max() - 30) & (db > -55)
    noise_db = float(np.percentile(db, 10))
    speech_db = float(10 * np.log10(np.mean(10 ** (db[speech] / 10)))) if speech.any() else noise_db
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
