"""One WebSocket (or Kafka) stream: PCM16 chunks in, partial hypotheses out, a final result at the end.

The stream ends at the client's end marker, when the speaker has been silent for
``endpoint_silence_s`` after speaking (energy endpointing, so a device may simply stop talking), or at
``max_seconds`` (cut off: counted as an endpoint truncation). The whole stream stays on the model
it started with, even if the champion is swapped meanwhile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from asr.audio import SAMPLE_RATE
from monitoring import metrics
from serving.recognition import Recognition, RecognitionService, Utterance, new_request_id

FRAME = 160  # 10 ms at 16 kHz
# What ended a stream, as the catalog's ``ProductionUtterance.ended_by`` names it. The device protocol
# says ``max_duration`` (firmware already branches on it, so it stays); the catalog says ``max_seconds``.
CATALOG_ENDED_BY = {"client": "client", "endpoint": "endpoint", "max_duration": "max_seconds"}


class StreamError(ValueError):
    """The client sent something a stream cannot take (odd byte count, too much audio, …)."""


@dataclass(frozen=True)
class StreamConfig:
    endpoint_silence_s: float = 0.6  # silence after speech that ends the utterance
    speech_dbfs: float = -40.0  # a 10 ms frame louder than this is speech
    max_seconds: float = 10.0  # voice commands are short; longer streams are cut here
    max_chunk_bytes: int = 64_000  # 2 s of PCM16 per message at most


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian 16-bit mono PCM → (samples,) float32 in [-1, 1)."""
    if len(data) % 2:
        raise StreamError(f"a PCM16 chunk must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class Endpointer:
    """Energy endpointing over 10 ms frames: ended once speech was heard and then silence lasted."""

    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self.heard_speech = False
        self.silent_frames = 0
        self._rest = np.zeros(0, dtype=np.float32)

    def accept(self, samples: np.ndarray) -> bool:
        buf = np.concatenate([self._rest, samples])
        n = len(buf) // FRAME
        self._rest = buf[n * FRAME:]
        if n:
            frames = buf[: n * FRAME].reshape(n, FRAME).astype(np.float64)
            loud = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12) > self.config.speech_dbfs
            for is_speech in loud:
                if is_speech:
                    self.heard_speech, self.silent_frames = True, 0
                elif self.heard_speech:
                    self.silent_frames += 1
        return self.heard_speech and self.silent_frames * FRAME >= self.config.endpoint_silence_s * SAMPLE_RATE


class StreamSession:
    def __init__(self, service: RecognitionService, device_id: str, request_id: str | None = None,
                 config: StreamConfig | None = None, channel: str = "ws",
                 device_slice: tuple[str | None, str | None, str | None, str | None] | None = None) -> None:
        self.service, self.device_id, self.channel = service, device_id, channel
        self.device_slice = device_slice  # the owner's profile, when the caller has the device (see Utterance)
        self.request_id = request_id or new_request_id()
        self.config = config or StreamConfig()
        self.slot = service.models.pick(self.request_id)
        self._stream = self.slot.recognizer.stream()
        self._endpointer = Endpointer(self.config)
        self._chunks: list[np.ndarray] = []
        self.samples = 0
        self.ended_by: str | None = None  # client | endpoint | max_duration

    def accept(self, data: bytes) -> str:
        """Feed one chunk; returns the partial text. Check :attr:`ended_by` afterwards."""
        if self.ended_by:
            raise StreamError("the stream already ended")
        if len(data) > self.config.max_chunk_bytes:
            raise StreamError(f"a chunk may hold at most {self.config.max_chunk_bytes} bytes, got {len(data)}")
        samples = pcm16_to_float(data)
        room = int(self.config.max_seconds * SAMPLE_RATE) - self.samples
        if len(samples) >= room:
            samples = samples[:max(room, 0)]
            self.ended_by = "max_duration"
            metrics.ENDPOINT_TRUNCATIONS.labels(self.channel).inc()
        self._chunks.append(samples)
        self.samples += len(samples)
        partial = self._stream.accept(samples).text if len(samples) else ""
        if not self.ended_by and self._endpointer.accept(samples):
            self.ended_by = "endpoint"
        return partial

    def finish(self) -> Recognition:
        """The final result (recorded like every other request). Latency = end of input → result."""
        if not self.samples:
            raise StreamError("the stream ended before any audio arrived")
        started = time.perf_counter()
        self.ended_by = self.ended_by or "client"
        hyp = self._stream.finish()
        latency_ms = (time.perf_counter() - started) * 1000
        wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        utt = Utterance(wav, self.device_id, self.request_id, ended_by=CATALOG_ENDED_BY[self.ended_by],
                        device_slice=self.device_slice)
        return self.service.complete(utt, hyp.text, hyp.confidence, self.slot, latency_ms, self.channel)
