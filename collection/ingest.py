"""Ingest: every source (studio, recording page, importers, production) enters the catalog here.

:func:`ingest` decodes, runs QC, canonicalises to 16 kHz mono PCM16 WAV, stores the bytes in
the content-addressed audio store and adds a :class:`~collection.models.Recording` — or stores
a :class:`~collection.models.Rejection` with the reason. Re-running with the same
``(source, external_id)`` returns what the first run did and adds nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import soundfile as sf
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from asr.audio import SAMPLE_RATE, AudioError

from .models import SOURCES, Recording, Rejection, Speaker
from .qc import Decoded, QcConfig, QcError, check, check_text, decode
from .store import AudioStore, sha256_bytes


@dataclass(frozen=True)
class IngestResult:
    status: str  # accepted | exists | rejected
    recording_id: str | None = None
    reason: str | None = None  # a qc.REASONS code when rejected
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "exists")


def canonical_wav(decoded: Decoded) -> bytes:
    """16 kHz mono PCM16 WAV bytes: one stored form, so equal audio hashes equal."""
    buf = io.BytesIO()
    sf.write(buf, decoded.wav, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def ensure_speaker(session: Session, *, source: str, external_id: str, **attrs: Any) -> Speaker:
    """The speaker known to ``source`` as ``external_id``, created on first sight (attrs: age_band,
    gender, dialect, persona, consent_id)."""
    speaker = session.scalar(select(Speaker).where(Speaker.source == source, Speaker.external_id == external_id))
    if speaker is None:
        speaker = Speaker(source=source, external_id=external_id, **attrs)
        session.add(speaker)
        session.flush()
    return speaker


def _same_submission(session: Session, source: str, external_id: str | None) -> IngestResult | None:
    """``exists`` when ``(source, external_id)`` is stored (by a concurrent retry of the same submission)."""
    if external_id is None:
        return None
    done = session.scalar(select(Recording).where(Recording.source == source, Recording.external_id == external_id))
    return IngestResult("exists", recording_id=done.id, metrics=done.qc) if done is not None else None


def _reject(session: Session, *, source: str, external_id: str | None, speaker_id: str | None, reason: str,
            message: str, sha256: str | None = None, metrics: dict[str, Any] | None = None) -> IngestResult:
    session.add(Rejection(source=source, external_id=external_id, sha256=sha256, speaker_id=speaker_id,
                          reason=reason, detail=message, metrics=metrics or {}))
    session.flush()
    return IngestResult("rejected", reason=reason, message=message, metrics=metrics or {})


def ingest(
    session: Session,
    store: AudioStore,
    data: bytes,
    *,
    source: str,
    speaker_id: str | None = None,
    external_id: str | None = None,
    environment: str | None = None,
    device: str | None = None,
    text: str | None = None,
    language: str = "ko",
    plan: str | None = None,
    qc: QcConfig = QcConfig(),
    erasure_secret: str | None = None,
) -> IngestResult:
    """QC + store + catalog one audio file. ``text`` is the prompt or the corpus transcript (kept
    as ``prompt_text``, normalised). Never raises for bad audio: the result says why it was refused.

    With ``erasure_secret`` (the key deletion requests digest with), audio that a deletion request
    erased is refused as ``erased`` — and, unlike other refusals, not recorded, since a rejection row
    would bring the erased audio's hash back into the catalog."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: {list(SOURCES)}")
    if external_id is not None:
        done = session.scalar(select(Recording).where(Recording.source == source,
                                                      Recording.external_id == external_id))
        if done is not None:
            return IngestResult("exists", recording_id=done.id, metrics=done.qc)
        refused = session.scalar(select(Rejection).where(Rejection.source == source,
                                                         Rejection.external_id == external_id))
        if refused is not None:
            return IngestResult("rejected", reason=refused.reason, message=refused.detail, metrics=refused.metrics)
    common = {"source": source, "external_id": external_id, "speaker_id": speaker_id}
    try:
        decoded = decode(data, max_seconds=max(qc.max_seconds * 4, 60.0))
    except AudioError as e:
        return _reject(session, reason="undecodable", message=str(e), **common)
    try:
        measures = check(decoded, qc)
        normalized = check_text(text, measures.duration, language, qc)
    except QcError as e:
        return _reject(session, reason=e.reason, message=str(e), metrics=e.measures.to_dict() if e.measures else {},
                       **common)
    metrics = measures.to_dict()
    wav = canonical_wav(decoded)
    digest = sha256_bytes(wav)
    if erasure_secret is not None:
        from .deletion import was_erased

        if was_erased(session, erasure_secret, sha256=digest):
            return IngestResult("rejected", reason="erased", message="this audio was erased by a deletion request")
    existing = session.scalar(select(Recording.id).where(Recording.sha256 == digest))
    if existing is not None:
        if (twin := _same_submission(session, source, external_id)) is not None:
            return twin
        return _reject(session, reason="duplicate", message=f"the same audio is already stored as {existing}",
                       sha256=digest, metrics=metrics, **common)
    stored = store.put(wav)
    recording = Recording(sha256=digest, uri=stored.uri, sample_rate=SAMPLE_RATE, duration=measures.duration,
                          channels=1, source=source, environment=environment, device=device, speaker_id=speaker_id,
                          language=language, prompt_text=normalized, external_id=external_id, plan=plan, qc=metrics)
    try:
        with session.begin_nested():  # a concurrent twin may have inserted the same hash meanwhile
            session.add(recording)
    except IntegrityError:
        if (twin := _same_submission(session, source, external_id)) is not None:
            return twin  # a concurrent retry of this very submission won the race: not a duplicate
        return _reject(session, reason="duplicate", message="the same audio was stored by a concurrent submission",
                       sha256=digest, metrics=metrics, **common)
    return IngestResult("accepted", recording_id=recording.id, metrics=metrics)
