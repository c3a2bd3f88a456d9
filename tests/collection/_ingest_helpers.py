"""Audio builders shared by the ingest, importer and QC-report tests (generated, no files needed)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

SR = 16000


def speech_like(seconds: float = 1.5, sr: int = SR, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """(samples,) float32: a voiced, syllable-rhythm signal (harmonics of a gliding F0 under a 2 Hz
    on/off envelope) over a faint noise floor — what QC's energy VAD and SNR estimate treat as speech.
    Different seeds give different bytes (so they are not duplicates of each other)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + (40 * seed) % 90 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t + seed), 0, None) ** 0.5
    wav = amplitude * envelope * voiced / 2.5 + 0.002 * rng.standard_normal(len(t))
    return wav.astype(np.float32)


def wav_bytes(wav: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def mp3_bytes(wav: np.ndarray, sr: int) -> bytes:
    """MP3 (LAME through PyAV), mono, at ``sr`` Hz — how Common Voice ships its clips (48 kHz)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sr)
        stream.layout = "mono"
        for i in range(0, len(wav), 1152):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[None, i:i + 1152], dtype=np.float32),
                                               format="flt", layout="mono")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()
