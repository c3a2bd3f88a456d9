"""Recognise a device's utterance and record it: what the HTTP route, the WebSocket and the Kafka worker call.

    service = RecognitionService(models, catalog, store, language="ko")
    result = service.recognize(wav, device_id="spk-kitchen-01", channel="http")
    result.to_dict()   # {request_id, text, confidence, command, model_version, latency_ms, ...}

One path for every channel: pick the model (champion, or challenger on the canary share), decode,
parse the command from the grammar, upsert the production utterance by request id (a retried or
redelivered request updates its row, never adds one; audio is kept only under the device's consent),
then hand a copy to the challenger when shadowing. Batches (the Kafka worker's micro-batches) are
decoded together per model.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from asr.audio import SAMPLE_RATE
from collection.consent import record_production
from collection.models import ProductionUtterance, ShadowResult
from collection.store import AudioStore
from monitoring import metrics
from serving.commands import command_parser
from serving.model_manager import ModelManager, ModelSlot

log = logging.getLogger(__name__)

SHADOW_BACKLOG = 16  # pending shadow decodes; past it a copy is skipped rather than slowing serving


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Utterance:
    """One utterance to recognise. ``wav``: (samples,) float32 at 16 kHz; ``audio``: the bytes as
    received (stored with consent), None to store the waveform as WAV."""

    wav: np.ndarray
    device_id: str
    request_id: str = field(default_factory=new_request_id)
    audio: bytes | None = None

    @property
    def duration_s(self) -> float:
        return len(self.wav) / SAMPLE_RATE


@dataclass(frozen=True)
class Recognition:
    request_id: str
    device_id: str
    text: str
    confidence: float
    command: dict[str, Any] | None
    model_version: str
    route: str  # champion | challenger
    latency_ms: float
    duration_s: float
    channel: str

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "text": self.text, "confidence": round(self.confidence, 4),
                "command": self.command, "model_version": self.model_version, "route": self.route,
                "latency_ms": round(self.latency_ms, 1), "duration_s": round(self.duration_s, 3)}


def wav_bytes(wav: np.ndarray) -> bytes:
    """16 kHz PCM16 WAV file bytes (how stream and Kafka audio is stored)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class RecognitionService:
    def __init__(self, models: ModelManager, catalog: sessionmaker[Session], store: AudioStore, *,
                 language: str, grammar: str = "ko_commands", erasure_secret: str | None = None) -> None:
        self.models, self.catalog, self.store = models, catalog, store
        self.language, self.erasure_secret = language, erasure_secret
        self.parser = command_parser(grammar)
        self._shadow = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._shadow_pending = 0
        self._lock = threading.Lock()

    # -- recognising ---------------------------------------------------------------------
    def recognize(self, utt: Utterance, channel: str = "http") -> Recognition:
        return self.recognize_batch([utt], channel)[0]

    def recognize_batch(self, utts: Sequence[Utterance], channel: str) -> list[Recognition]:
        """Decode (one batch per model), record every utterance, start shadows. Order is kept."""
        started = time.perf_counter()
        by_slot: dict[str, tuple[ModelSlot, list[int]]] = {}
        for i, utt in enumerate(utts):
            slot = self.models.pick(utt.request_id)
            by_slot.setdefault(slot.version, (slot, []))[1].append(i)
        results: list[Recognition | None] = [None] * len(utts)
        served: list[ModelSlot | None] = [None] * len(utts)
        for slot, idx in by_slot.values():
            hyps = slot.recognizer.transcribe_batch([utts[i].wav for i in idx])
            elapsed_ms = (time.perf_counter() - started) * 1000
            for i, hyp in zip(idx, hyps, strict=True):
                results[i] = self._result(utts[i], hyp.text, hyp.confidence, slot, elapsed_ms, channel)
                served[i] = slot
        done = [r for r in results if r is not None]
        self.record(done, utts)
        for utt, slot in zip(utts, served, strict=True):
            self._start_shadow(slot, utt)
        return done

    def complete(self, utt: Utterance, text: str, confidence: float, slot: ModelSlot, latency_ms: float,
                 channel: str) -> Recognition:
        """Record an utterance another decoder finished (a stream) and start its shadow."""
        result = self._result(utt, text, confidence, slot, latency_ms, channel)
        self.record([result], [utt])
        self._start_shadow(slot, utt)
        return result

    def _result(self, utt: Utterance, text: str, confidence: float, slot: ModelSlot, latency_ms: float,
                channel: str) -> Recognition:
        parsed = self.parser.parse(text)
        result = Recognition(utt.request_id, utt.device_id, text, float(confidence),
                             parsed.to_dict() if parsed else None, slot.version, slot.alias, latency_ms,
                             utt.duration_s, channel)
        metrics.RECOGNITIONS.labels(channel, slot.version, slot.alias).inc()
        metrics.RECOGNITION_LATENCY.labels(channel, slot.version).observe(latency_ms / 1000)
        metrics.CONFIDENCE.labels(channel, slot.version).observe(result.confidence)
        if utt.duration_s > 0:
            metrics.REAL_TIME_FACTOR.labels(channel).observe(latency_ms / 1000 / utt.duration_s)
        if parsed is None:
            metrics.OUT_OF_GRAMMAR.labels(channel).inc()
        return result

    # -- recording -----------------------------------------------------------------------
    def record(self, results: Sequence[Recognition], utts: Sequence[Utterance]) -> None:
        """Upsert each production utterance (one transaction for the batch). Raises ValueError when
        a request id already belongs to another device."""
        with self.catalog() as session:
            for result, utt in zip(results, utts, strict=True):
                row = record_production(
                    session, self.store, request_id=result.request_id, device_id=result.device_id,
                    audio=utt.audio if utt.audio is not None else wav_bytes(utt.wav), hypothesis=result.text,
                    confidence=result.confidence, latency_ms=result.latency_ms,
                    model_version=result.model_version, language=self.language,
                    erasure_secret=self.erasure_secret)
                row.channel, row.route = result.channel, result.route
                row.command = result.command if row.hypothesis is not None else None  # content: under consent only
                row.duration_s = result.duration_s
            session.commit()

    # -- shadowing -----------------------------------------------------------------------
    def _start_shadow(self, served: ModelSlot | None, utt: Utterance) -> None:
        slot = self.models.shadow_slot(served) if served is not None else None
        if slot is None:
            return
        with self._lock:
            if self._shadow_pending >= SHADOW_BACKLOG:
                metrics.SHADOW_RESULTS.labels("skipped").inc()
                return
            self._shadow_pending += 1
        self._shadow.submit(self._run_shadow, slot, utt)

    def _run_shadow(self, slot: ModelSlot, utt: Utterance) -> None:
        try:
            started = time.perf_counter()
            hyp = slot.recognizer.transcribe(utt.wav)
            latency_ms = (time.perf_counter() - started) * 1000
            with self.catalog() as session:
                try:
                    with session.begin_nested():
                        session.add(ShadowResult(request_id=utt.request_id, model_version=slot.version,
                                                 hypothesis=hyp.text, confidence=float(hyp.confidence),
                                                 latency_ms=latency_ms))
                except IntegrityError:
                    pass  # a retried request was shadowed already
                session.commit()
            metrics.SHADOW_RESULTS.labels("recorded").inc()
        except Exception:  # the shadow must never affect serving
            log.exception("shadow decode of %s failed", utt.request_id)
            metrics.SHADOW_RESULTS.labels("failed").inc()
        finally:
            with self._lock:
                self._shadow_pending -= 1

    def wait_for_shadows(self, timeout: float = 30.0) -> None:
        """Block until queued shadow decodes are stored (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._shadow_pending and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._shadow.shutdown(wait=True)

    # -- reading back --------------------------------------------------------------------
    def lookup(self, request_id: str, device_id: str) -> ProductionUtterance | None:
        """The device's own request, or None (unknown, or another device's: the caller cannot tell)."""
        with self.catalog() as session:
            row = session.get(ProductionUtterance, request_id)
            return row if row is not None and row.device_id == device_id else None
