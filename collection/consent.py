"""Consent: granting, revoking, retention, and the consent gate for production audio.

A :class:`~collection.models.Consent` belongs to a subject: a ``speaker`` (someone who recorded for us)
or a ``device`` (the owner of an AI speaker, for its production audio). Granting again with the same
terms returns the consent in force; granting new terms supersedes it (the old row gets ``revoked_at``,
the data stays, because the new consent covers it).

Revoking is a deletion request: :func:`revoke_consent` marks the consent revoked and erases the data it
covered (:func:`collection.deletion.delete_speaker`). Retention: :func:`expire_retention` erases speakers
whose consent is older than its ``retention_days``, and production recordings older than their device
consent's ``retention_days`` (the device's consent itself stays in force).

Production audio: :func:`record_production` always keeps the service-log row, and stores the audio
only when the device has a consent in force with ``scope_training``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .datasets import consent_in_force
from .deletion import DeletionReport, delete_recordings, delete_speaker, subject_digest
from .ingest import IngestResult, ensure_speaker, ingest
from .models import AuditEntry, Consent, ProductionUtterance, Recording, Speaker, aware, utcnow
from .store import AudioStore

log = logging.getLogger(__name__)

SUBJECT_TYPES = ("speaker", "device")
PRODUCTION = "production"

__all__ = ["ConsentError", "DeletionReport", "active_consent", "delete_speaker", "expire_retention", "grant_consent",
           "grant_device_consent", "record_production", "revoke_consent"]


class ConsentError(ValueError):
    """A consent could not be recorded as given; the message names the field and the valid options."""


def check_checklist(checklist: Mapping[str, bool] | Iterable[str], required: Iterable[str] | None) -> dict[str, bool]:
    """The ticked items as ``{item: True}``. With ``required``, every required item must be ticked and no
    unknown item may appear (a forged or outdated form)."""
    ticked = ({k: bool(v) for k, v in checklist.items()} if isinstance(checklist, Mapping)
              else {str(k): True for k in checklist})
    if required is not None:
        required = list(required)
        unknown = sorted(set(ticked) - set(required))
        if unknown:
            raise ConsentError(f"checklist has unknown item(s) {unknown}; this form's items are {required}")
        missing = [item for item in required if not ticked.get(item)]
        if missing:
            raise ConsentError(f"checklist item(s) {missing} not ticked; all of {required} are required")
    return {k: v for k, v in sorted(ticked.items()) if v}


def active_consent(session: Session, subject_type: str, subject_id: str, *, scope: str | None = None,
                   now: datetime | None = None) -> Consent | None:
    """The newest consent of a subject that is in force now (not revoked, within retention), optionally
    granting ``scope`` (``scope_training`` or ``scope_human_review``)."""
    now = now or utcnow()
    for consent in session.scalars(select(Consent).where(Consent.subject_type == subject_type,
                                                         Consent.subject_id == subject_id,
                                                         Consent.revoked_at.is_(None))
                                   .order_by(Consent.granted_at.desc(), Consent.id.desc())):
        if consent_in_force(consent, now, scope=scope):
            return consent
    return None


def grant_consent(
    session: Session,
    *,
    subject_type: str,
    subject_id: str,
    text_version: str,
    scope_training: bool,
    scope_human_review: bool,
    retention_days: int,
    checklist: Mapping[str, bool] | Iterable[str] = (),
    required: Iterable[str] | None = None,
    actor: str = "system",
) -> Consent:
    """Record what a subject agreed to. ``retention_days`` > 0; ``checklist`` is validated against
    ``required`` (the form's legal items) when given. A speaker's ``consent_id`` is pointed at the consent.

    Raises:
        ConsentError: unknown subject type, a speaker id not in the catalog, bad retention, or a checklist
            that does not match ``required``.
    """
    if subject_type not in SUBJECT_TYPES:
        raise ConsentError(f"unknown subject_type {subject_type!r}; valid: {list(SUBJECT_TYPES)}")
    if not subject_id or len(subject_id) > 64:
        raise ConsentError(f"subject_id must be 1-64 characters, got {subject_id!r}")
    if text_version and len(text_version) > 64:
        raise ConsentError(f"text_version is {len(text_version)} characters; at most 64")
    if not text_version:
        raise ConsentError("text_version is required (the version of the consent text the subject saw)")
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days <= 0:
        raise ConsentError(f"retention_days must be a positive whole number of days, got {retention_days!r}")
    ticked = check_checklist(checklist, required)
    speaker = None
    if subject_type == "speaker":
        speaker = session.get(Speaker, subject_id)
        if speaker is None:
            raise ConsentError(f"no speaker {subject_id!r} in the catalog; create the speaker first")
    current = active_consent(session, subject_type, subject_id)
    terms = (text_version, bool(scope_training), bool(scope_human_review), retention_days, ticked)
    if current is not None and (current.text_version, current.scope_training, current.scope_human_review,
                                current.retention_days, current.checklist) == terms:
        return current  # the same consent again: nothing new
    now = utcnow()
    # Superseded by the new terms; the data stays covered. Every earlier un-revoked consent, not only the
    # one in force: a lapsed one the retention job has not reached yet must not erase what this covers.
    for old in session.scalars(select(Consent).where(Consent.subject_type == subject_type,
                                                     Consent.subject_id == subject_id, Consent.revoked_at.is_(None))):
        old.revoked_at = now
    consent = Consent(subject_type=subject_type, subject_id=subject_id, text_version=text_version,
                      scope_training=bool(scope_training), scope_human_review=bool(scope_human_review),
                      retention_days=retention_days, checklist=ticked, granted_at=now)
    session.add(consent)
    session.flush()
    if speaker is not None:
        speaker.consent_id = consent.id
    session.add(AuditEntry(actor=actor, action="grant_consent", subject_digest=None,
                           detail={"consent_id": consent.id, "subject_type": subject_type,
                                   "text_version": text_version, "supersedes": current.id if current else None}))
    session.flush()
    return consent


def grant_device_consent(
    session: Session,
    *,
    device_id: str,
    text_version: str,
    scope_training: bool,
    retention_days: int,
    scope_human_review: bool = False,
    checklist: Mapping[str, bool] | Iterable[str] = (),
    required: Iterable[str] | None = None,
    actor: str = "system",
) -> Consent:
    """A device owner's consent for its production audio (``scope_training`` gates storing it)."""
    return grant_consent(session, subject_type="device", subject_id=device_id, text_version=text_version,
                         scope_training=scope_training, scope_human_review=scope_human_review,
                         retention_days=retention_days, checklist=checklist, required=required, actor=actor)


def covered_speakers(session: Session, consent: Consent) -> list[Speaker]:
    """The speakers whose data a consent covers: its subject, every speaker pointing at it (a corpus'
    consent), or for a device consent the device's production speaker."""
    if consent.subject_type == "device":
        where = (Speaker.source == PRODUCTION) & (Speaker.external_id == consent.subject_id)
    else:
        where = or_(Speaker.consent_id == consent.id, Speaker.id == consent.subject_id)
    return list(session.scalars(select(Speaker).where(where).order_by(Speaker.id)))


def revoke_consent(
    session: Session,
    store: AudioStore,
    consent_or_speaker_id: str,
    *,
    actor: str,
    secret: str,
    check_models: bool = True,
) -> list[DeletionReport]:
    """Withdraw a consent and erase everyone it covered: by consent id, or by speaker id (that speaker's
    consent). A speaker's own consent covers that speaker; a shared one (a corpus' consent) every speaker
    pointing at it; a device consent the device's production speaker. One report per erased speaker.

    Raises:
        LookupError: no such consent or speaker.
    """
    consent = session.get(Consent, consent_or_speaker_id)
    speakers: list[Speaker] = []
    if consent is None:
        speaker = session.get(Speaker, consent_or_speaker_id)
        if speaker is None:
            raise LookupError(f"{consent_or_speaker_id!r} is neither a consent id nor a speaker id in the catalog")
        consent = session.get(Consent, speaker.consent_id) if speaker.consent_id else None
        speakers = [speaker]  # revoking "my" consent erases me, even under a shared consent
    else:
        speakers = covered_speakers(session, consent)
    shared = consent is not None and consent.subject_type == "speaker" and speakers and any(
        consent.subject_id != s.id for s in speakers)
    if consent is not None and not (shared and consent_or_speaker_id != consent.id):
        consent.revoked_at = consent.revoked_at or utcnow()  # one member leaving does not end a corpus' consent
    reports = [delete_speaker(session, store, s.id, actor=actor, reason="consent revoked", secret=secret,
                              check_models=check_models, action="revoke_consent") for s in speakers]
    if consent is not None and consent.subject_type == "device":
        _forget_device_text(session, consent.subject_id)
    if not reports:  # revoked before any audio was kept
        digest = subject_digest(secret, consent.subject_id)
        report = DeletionReport(request_id="", action="revoke_consent", subject_digest=digest, recordings=0,
                                audio_files=0, rows={}, dataset_versions=[], model_versions=[],
                                notes=["no stored data under this consent"])
        session.add(AuditEntry(actor=actor, action="revoke_consent", subject_digest=digest,
                               detail={**report.to_dict(), "consent_id": consent.id}))
        session.flush()
        reports.append(report)
    return reports


def expire_retention(
    session: Session,
    store: AudioStore,
    *,
    secret: str,
    now: datetime | None = None,
    actor: str = "retention",
    check_models: bool = True,
) -> list[DeletionReport]:
    """Erase what outlived its retention period: the speakers covered by a consent granted more than
    ``retention_days`` ago (the consent ends), and production recordings older than their device
    consent's ``retention_days`` (that consent stays in force)."""
    now = now or utcnow()
    reports = []
    for consent in list(session.scalars(select(Consent).where(Consent.revoked_at.is_(None)).order_by(Consent.id))):
        deadline = aware(consent.granted_at) + timedelta(days=consent.retention_days)
        if consent.subject_type == "speaker":
            if deadline > now:
                continue
            consent.revoked_at = now
            reports += [delete_speaker(session, store, speaker.id, actor=actor, secret=secret,
                                       reason=f"retention of {consent.retention_days} days passed",
                                       check_models=check_models, action="expire_retention")
                        for speaker in covered_speakers(session, consent)]
        elif consent.subject_type == "device":
            _forget_device_text(session, consent.subject_id, before=now - timedelta(days=consent.retention_days))
            old = [rid for rid, created in session.execute(
                select(Recording.id, Recording.created_at).join(Speaker, Speaker.id == Recording.speaker_id)
                .where(Speaker.source == PRODUCTION, Speaker.external_id == consent.subject_id))
                if aware(created) + timedelta(days=consent.retention_days) <= now]
            if old:
                reports.append(delete_recordings(session, store, old, actor=actor, secret=secret,
                                                 subject=consent.subject_id, check_models=check_models,
                                                 reason=f"retention of {consent.retention_days} days passed"))
    return reports


def record_production(
    session: Session,
    store: AudioStore,
    *,
    request_id: str,
    device_id: str,
    audio: bytes | None,
    hypothesis: str | None,
    confidence: float | None,
    latency_ms: float | None,
    model_version: str | None,
    language: str,
    environment: str | None = None,
    erasure_secret: str | None = None,
) -> ProductionUtterance:
    """Upsert one served request (replays update the same row). The audio is stored (source
    ``production``, speaker = the device's production speaker) only when the device has a consent in
    force with ``scope_training``; audio QC refused is kept as a rejection, as for every source. With
    ``erasure_secret``, a replay of a request whose audio a deletion erased does not store it again."""
    if not request_id or len(request_id) > 64:
        raise ValueError(f"request_id must be 1-64 characters, got {request_id!r}")
    if not device_id or len(device_id) > 64:  # the catalog's column width, the same on every database
        raise ValueError(f"device_id must be 1-64 characters, got {device_id!r}")
    utt = session.get(ProductionUtterance, request_id)
    if utt is None:
        try:
            with session.begin_nested():  # a replay racing the first delivery inserts once
                utt = ProductionUtterance(request_id=request_id, device_id=device_id)
                session.add(utt)
        except IntegrityError:
            utt = session.get(ProductionUtterance, request_id)
            assert utt is not None
    elif utt.device_id != device_id:
        raise ValueError(f"request {request_id!r} belongs to device {utt.device_id!r}, not {device_id!r}")
    # What was said (the hypothesis) is personal data like the audio: kept only while the device owner's
    # consent is in force (any scope); the service log around it (ids, version, confidence, latency) always.
    keep_text = active_consent(session, "device", device_id) is not None
    utt.hypothesis = hypothesis if keep_text else None
    utt.confidence, utt.latency_ms = confidence, latency_ms
    utt.model_version = model_version
    if audio and utt.recording_id is None:
        consent = active_consent(session, "device", device_id, scope="scope_training")
        if consent is not None:
            result = _store_audio(session, store, consent, utt, audio, language, environment, erasure_secret)
            if result.ok:
                utt.recording_id = result.recording_id
    session.flush()
    return utt


def _forget_device_text(session: Session, device_id: str, before: datetime | None = None) -> None:
    """Clear the hypotheses and commands of a device's requests (all, or those older than ``before``)
    unless another consent of the device still covers them."""
    if before is None and active_consent(session, "device", device_id) is not None:
        return
    where = [ProductionUtterance.device_id == device_id, ProductionUtterance.hypothesis.is_not(None)]
    if before is not None:
        where.append(ProductionUtterance.created_at <= before)
    session.execute(update(ProductionUtterance).where(*where).values(hypothesis=None, command=None))


def _store_audio(session: Session, store: AudioStore, consent: Consent, utt: ProductionUtterance, audio: bytes,
                 language: str, environment: str | None, erasure_secret: str | None) -> IngestResult:
    speaker = ensure_speaker(session, source=PRODUCTION, external_id=utt.device_id, persona="real",
                             consent_id=consent.id)
    speaker.consent_id = consent.id  # the newest device consent covers this audio
    result = ingest(session, store, audio, source=PRODUCTION, speaker_id=speaker.id, external_id=utt.request_id,
                    device=utt.device_id, environment=environment, language=language,
                    erasure_secret=erasure_secret)
    if not result.ok:
        log.info("production audio of %s refused by QC: %s", utt.request_id, result.message)
    return result
