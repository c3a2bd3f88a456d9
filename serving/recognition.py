"""Recognise a device's utterance and record it: what the HTTP route, the WebSocket and the Kafka worker call.

    service = RecognitionService(models, catalog, store, language="ko")
    result = service.recognize(wav, device_id="spk-kitchen-01", channel="http")
    result.to_dict()   # {request_id, text, confidence, command, model_version, latency_ms, ...}

One path for every channel: pick the model (champion, or challenger on the canary share), decode,
parse the command from the grammar, upsert the production utterance by request id (a retried or
redelivered request updates its row, never adds one; audio is kept only under the device's consent),
then hand a copy to the challenger when shadowing. Batches (the Kafka worker's micro-batches) are
decoded together per model.

Every recorded utterance also carries what monitoring needs, consent or not (numbers, not content): the
slice (the device owner's profile when it was served: dialect region, age band, environment, device
type), input features (speech level, SNR — measured as QC measures stored audio —, speaking rate),
whether the grammar parsed a command, and for a stream what ended it.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from asr.audio import SAMPLE_RATE
from asr.text import get_language_pack
from collection.consent import record_production
from collection.models import Device, ProductionUtterance, ShadowResult
from collection.qc import speech_levels
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
    ended_by: str | None = None  # a stream's end as the catalog names it: client | endpoint | max_seconds
    # (dialect, age_band, environment, device_type) when the caller has the device at hand (the API
    # authenticated it); None: looked up while recording (the Kafka worker knows only the id)
    device_slice: tuple[str | None, str | None, str | None, str | None] | None = None

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


@dataclass(frozen=True)
class InputFeatures:
    """What an utterance sounded like, for label-free drift and VOC triage: ``speech_dbfs`` (speech level,
    dBFS), ``snr_db`` (speech over the noise floor, dB), ``speech_rate`` (normalised hypothesis characters,
    spaces left out, per second of audio; None for empty audio)."""

    speech_dbfs: float
    snr_db: float
    speech_rate: float | None


def input_features(wav: np.ndarray, text: str, normalize: Callable[[str], str]) -> InputFeatures:
    """``wav``: (samples,) float32 at 16 kHz; ``normalize``: the language pack's normaliser. ~0.5 ms for
    a 2 s command (collection.qc's frame energies)."""
    speech_dbfs, snr_db = speech_levels(wav)
    duration = len(wav) / SAMPLE_RATE
    chars = len(normalize(text).replace(" ", "")) if text else 0
    return InputFeatures(round(speech_dbfs, 2), round(snr_db, 2), round(chars / duration, 3) if duration else None)


def wav_bytes(wav: np.ndarray) -> bytes:
    """16 kHz PCM16 WAV file bytes (how stream and Kafka audio is stored)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def device_slice(device: Device) -> tuple[str | None, str | None, str | None, str | None]:
    """(dialect, age_band, environment, device_type) of a device: its owner's profile as a slice."""
    return device.region, device.age_band, device.environment, device.device_type


def device_slices(session: Session, device_ids: set[str]) -> dict[str, tuple[str | None, ...]]:
    """``{device_id: (dialect, age_band, environment, device_type)}`` from the devices' owner profiles
    (one query for a batch); a device not in the catalog is left out (its utterances get no slice)."""
    rows = session.execute(select(Device.id, Device.region, Device.age_band, Device.environment, Device.device_type)
                           .where(Device.id.in_(sorted(device_ids))))
    return {row[0]: tuple(row[1:]) for row in rows}


class RecognitionService:
    def __init__(self, models: ModelManager, catalog: sessionmaker[Session], store: AudioStore, *,
                 language: str, grammar: str = "ko_commands", erasure_secret: str | None = None) -> None:
        self.models, self.catalog, self.store = models, catalog, store
        self.language, self.erasure_secret = language, erasure_secret
        self.parser = command_parser(grammar)
        self.normalize = get_language_pack(language).normalize
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
            metrics.REAL_TIME_FACTOR.labels(channel, slot.version).observe(latency_ms / 1000 / utt.duration_s)
        if parsed is None:
            metrics.OUT_OF_GRAMMAR.labels(channel).inc()
        return result

    # -- recording -----------------------------------------------------------------------
    def record(self, results: Sequence[Recognition], utts: Sequence[Utterance]) -> None:
        """Upsert each production utterance (one transaction for the batch) with its slice and input
        features. Raises ValueError when a request id already belongs to another device."""
        # Measured before the transaction: on SQLite it holds the write lock.
        features = [input_features(utt.wav, result.text, self.normalize)
                    for result, utt in zip(results, utts, strict=True)]
        with self.catalog() as session:
            unknown = {result.device_id for result, utt in zip(results, utts, strict=True) if utt.device_slice is None}
            slices = device_slices(session, unknown) if unknown else {}
            for result, utt, feat in zip(results, utts, features, strict=True):
                dialect, age_band, environment, device_type = (
                    utt.device_slice or slices.get(result.device_id, (None, None, None, None)))
                row = record_production(
                    session, self.store, request_id=result.request_id, device_id=result.device_id,
                    audio=utt.audio if utt.audio is not None else wav_bytes(utt.wav), hypothesis=result.text,
                    confidence=result.confidence, latency_ms=result.latency_ms,
                    model_version=result.model_version, language=self.language, environment=environment,
                    erasure_secret=self.erasure_secret)
                row.channel, row.route = result.channel, result.route
                row.command = result.command if row.hypothesis is not None else None  # content: under consent only
                row.in_grammar = result.command is not None  # a yes/no, not what was said: kept without consent
                row.duration_s, row.ended_by = result.duration_s, utt.ended_by
                row.dialect, row.age_band, row.environment = dialect, age_band, environment
                row.device_type = device_type
                row.speech_dbfs, row.snr_db, row.speech_rate = feat.speech_dbfs, feat.snr_db, feat.speech_rate
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
        """Decode with the challenger and store what it said — the text only where the production row kept
        the champion's (the owner's consent covers the request's content, whichever model heard it). A
        failed decode is stored too, without hypothesis or confidence: the release's error rate counts it."""
        started = time.perf_counter()
        text: str | None = None
        confidence: float | None = None
        outcome = "recorded"
        try:
            hyp = slot.recognizer.transcribe(utt.wav)
            text, confidence = hyp.text, float(hyp.confidence)
        except Exception:  # the shadow must never affect serving
            log.exception("shadow decode of %s failed", utt.request_id)
            outcome = "failed"
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            with self.catalog() as session:
                kept = session.scalar(select(ProductionUtterance.hypothesis)
                                      .where(ProductionUtterance.request_id == utt.request_id)) is not None
                try:
                    with session.begin_nested():
                        session.add(ShadowResult(request_id=utt.request_id, model_version=slot.version,
                                                 hypothesis=text if kept else None, confidence=confidence,
                                                 latency_ms=latency_ms))
                except IntegrityError:
                    pass  # a retried request was shadowed already
                session.commit()
        except Exception:
            log.exception("could not store the shadow result of %s", utt.request_id)
            outcome = "failed"
        finally:
            metrics.SHADOW_RESULTS.labels(outcome).inc()
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
