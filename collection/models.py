"""The catalog: SQLAlchemy 2 models for who said what, under which consent, and who typed it.

One schema for SQLite (embedded default) and PostgreSQL (production, CI); Alembic migrations
in ``collection/migrations`` create it (:func:`collection.db.upgrade`). Ids are short strings
(``spk-…``, ``rec-…``) so they read well in manifests, URLs and audit entries. Timestamps are
timezone-aware UTC.

Vocabularies (checked in code, stored as plain strings so adding one needs no migration):
recording ``source``: synthetic / upload / import / production; label ``status``:
prelabelled / submitted / reviewed / rejected; task ``status``: open / submitted / cancelled;
user ``role``: labeler / reviewer / admin / ops; feedback ``status``: new / triaged / labeled / fixed /
closed; alert ``status``: open / resolved.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SOURCES = ("synthetic", "upload", "import", "production")
LABEL_STATUSES = ("prelabelled", "submitted", "reviewed", "rejected")
TASK_STATUSES = ("open", "submitted", "cancelled")
ROLES = ("labeler", "reviewer", "admin", "ops")
LABEL_FLAGS = ("noise", "unintelligible", "wrong_language")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; the catalog stores UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    """``<prefix>-<12 hex>``: random, so ids carry nothing about the person."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Consent(Base):
    """What a speaker (or a device owner, for production audio) agreed to, under which text version."""

    __tablename__ = "consents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("con"))
    subject_type: Mapped[str] = mapped_column(String(16))  # speaker | device
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    text_version: Mapped[str] = mapped_column(String(64))
    scope_training: Mapped[bool] = mapped_column(Boolean, default=False)
    scope_human_review: Mapped[bool] = mapped_column(Boolean, default=False)
    retention_days: Mapped[int] = mapped_column(Integer)
    # Legal checklist items the person ticked (PIPA-style), exactly as shown on the form.
    checklist: Mapped[dict[str, Any]] = mapped_column(default=dict)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class Speaker(Base):
    __tablename__ = "speakers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("spk"))
    age_band: Mapped[str | None] = mapped_column(String(16))
    gender: Mapped[str | None] = mapped_column(String(16))
    dialect: Mapped[str | None] = mapped_column(String(32))
    persona: Mapped[str] = mapped_column(String(16), default="real")  # synthetic | real
    consent_id: Mapped[str | None] = mapped_column(ForeignKey("consents.id"))
    # Where the speaker came from (importer's client id, studio persona id); unique per source.
    source: Mapped[str | None] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    consent: Mapped[Consent | None] = relationship()

    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_speaker_external"),)


class Recording(Base):
    """One stored audio file. ``sha256`` is the audio store key; ``duration`` seconds, ``sample_rate`` Hz."""

    __tablename__ = "recordings"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rec"))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    uri: Mapped[str] = mapped_column(String(512))
    sample_rate: Mapped[int] = mapped_column(Integer)
    duration: Mapped[float] = mapped_column(Float)
    channels: Mapped[int] = mapped_column(Integer, default=1)
    source: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(64))
    speaker_id: Mapped[str | None] = mapped_column(ForeignKey("speakers.id"), index=True)
    language: Mapped[str] = mapped_column(String(16), default="ko")
    # The text the speaker was asked to read or the corpus' own transcript: the simulated
    # labeler's answer key, never training data until a person reviewed a label.
    prompt_text: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(256))
    plan: Mapped[str | None] = mapped_column(String(64))
    qc: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The source's own per-item fields (Common Voice votes/variant, audiofolder extra columns).
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    speaker: Mapped[Speaker | None] = relationship()

    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_recording_external"),)


class Rejection(Base):
    """A submission QC refused, with the reason; kept so nothing disappears silently."""

    __tablename__ = "rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(256))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    speaker_id: Mapped[str | None] = mapped_column(String(40), index=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_rejection_external"),)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr"))
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The demo's and tests' simulated labelers answer from the known text; marked in the data.
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LabelTask(Base):
    """One unit of labeling work: a recording for one labeler in one round (round 2 = double transcription)."""

    __tablename__ = "label_tasks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tsk"))
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher first
    reason: Mapped[str] = mapped_column(String(32), default="new")  # voc | low_confidence | new | recollect
    status: Mapped[str] = mapped_column(String(16), default="open")
    assignee_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    feedback_id: Mapped[str | None] = mapped_column(ForeignKey("feedback.id"))
    prelabel: Mapped[str | None] = mapped_column(Text)
    prelabel_model: Mapped[str | None] = mapped_column(String(128))
    prelabel_confidence: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    recording: Mapped[Recording] = relationship()

    __table_args__ = (UniqueConstraint("recording_id", "round", name="uq_task_round"),)


class Label(Base):
    """A transcript of a recording. Exactly one per task; only ``reviewed`` labels become training data."""

    __tablename__ = "labels"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("lbl"))
    task_id: Mapped[str] = mapped_column(ForeignKey("label_tasks.id"), unique=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    labeler_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str | None] = mapped_column(Text)
    prelabel: Mapped[str | None] = mapped_column(Text)
    flags: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="prelabelled")
    # CER between the two rounds' transcripts (double transcription only).
    agreement: Mapped[float | None] = mapped_column(Float)
    reviewer_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    review_note: Mapped[str | None] = mapped_column(Text)
    seconds_spent: Mapped[float | None] = mapped_column(Float)
    submitted_at: Mapped[datetime | None] = mapped_column(default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(default=None)

    recording: Mapped[Recording] = relationship()


class DatasetVersion(Base):
    """An immutable, hashed manifest of reviewed labels; splits never share a speaker."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # e.g. ds-<hash[:12]>
    name: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    manifest_uri: Mapped[str] = mapped_column(String(512))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # split -> slice -> value -> n
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set when a deletion request removed someone from this (otherwise frozen) version.
    redactions: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetMember(Base):
    """Which recordings a dataset version holds (so deletions can say where someone was)."""

    __tablename__ = "dataset_members"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    recording_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    speaker_id: Mapped[str | None] = mapped_column(String(40), index=True)
    split: Mapped[str] = mapped_column(String(32))


class ProductionUtterance(Base):
    """One request served to a device; its audio is kept (``recording_id``) only with the device's consent."""

    __tablename__ = "production_utterances"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str | None] = mapped_column(String(128))
    hypothesis: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    recording_id: Mapped[str | None] = mapped_column(ForeignKey("recordings.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # How it arrived (http / ws / kafka), which model answered (champion / challenger on the
    # canary share), the parsed command and the audio's length in seconds.
    channel: Mapped[str | None] = mapped_column(String(16))
    route: Mapped[str | None] = mapped_column(String(16))
    command: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    duration_s: Mapped[float | None] = mapped_column(Float)
    # What ended a WebSocket stream (client / endpoint / max_seconds); null over HTTP and Kafka.
    ended_by: Mapped[str | None] = mapped_column(String(16))
    # The slice, copied from the device owner's profile when the request was served (profiles change;
    # a complaint or a drift window is about who was speaking then).
    dialect: Mapped[str | None] = mapped_column(String(32))
    age_band: Mapped[str | None] = mapped_column(String(16))
    environment: Mapped[str | None] = mapped_column(String(32))
    device_type: Mapped[str | None] = mapped_column(String(32))
    # Input features for label-free drift, measured before the consent gate (numbers, not content):
    # speech level dBFS, estimated SNR dB, normalised hypothesis characters per second of audio.
    speech_dbfs: Mapped[float | None] = mapped_column(Float)
    snr_db: Mapped[float | None] = mapped_column(Float)
    speech_rate: Mapped[float | None] = mapped_column(Float)
    # Whether the grammar parsed a command (kept without consent, unlike the command itself).
    in_grammar: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (Index("ix_production_utterances_created_at", "created_at"),)


class Device(Base):
    """A speaker in a customer's home that calls the device API; ``device_type`` is a slice."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_type: Mapped[str] = mapped_column(String(32), default="speaker")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    # The owner's profile from the account (all optional): dialect region of the address, the owner's
    # age band, where the speaker stands (quiet / tv / kitchen / far_field). Production slices come from it.
    region: Mapped[str | None] = mapped_column(String(32))
    age_band: Mapped[str | None] = mapped_column(String(16))
    environment: Mapped[str | None] = mapped_column(String(32))


class DeviceKey(Base):
    """One credential of a device, stored as the sha256 of the key (keys are 256-bit random, so a
    plain hash is enough and costs microseconds per request). A rotated-out key keeps working until
    ``expires_at`` (the overlap window)."""

    __tablename__ = "device_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dk"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()


class ShadowResult(Base):
    """What the challenger said about a request it shadowed (never returned to the device)."""

    __tablename__ = "shadow_results"
    __table_args__ = (UniqueConstraint("request_id", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(128))
    hypothesis: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """A customer complaint (VOC) about a request (from the device) or about a device and a time (logged by
    ops from a call-centre contact). Triage links it to utterances, tags likely causes and may open a
    label task; ``status`` moves new → triaged → labeled → fixed (or closed), each step a FeedbackEvent."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("voc"))
    request_id: Mapped[str | None] = mapped_column(ForeignKey("production_utterances.request_id"))
    device_id: Mapped[str | None] = mapped_column(String(64), index=True)
    category: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(16), default="device")  # device | ops
    occurred_at: Mapped[datetime | None] = mapped_column()  # when the complained-about thing happened
    created_by: Mapped[str | None] = mapped_column(String(64))  # the ops user who logged it
    causes: Mapped[list[Any]] = mapped_column(default=list)  # likely causes, tagged at triage
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher first
    label_task_id: Mapped[str | None] = mapped_column(String(40))
    fixed_in_model_version: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime | None] = mapped_column()
    # The slice of the device owner when the complaint was made (see ProductionUtterance).
    dialect: Mapped[str | None] = mapped_column(String(32))
    age_band: Mapped[str | None] = mapped_column(String(16))
    environment: Mapped[str | None] = mapped_column(String(32))
    device_type: Mapped[str | None] = mapped_column(String(32))


class FeedbackEvent(Base):
    """One step of a complaint's workflow: who moved it from which status to which, when, and why."""

    __tablename__ = "feedback_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    feedback_id: Mapped[str] = mapped_column(ForeignKey("feedback.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)


class FeedbackUtterance(Base):
    """A complaint is about these utterances (one for a device's feedback, those around the time for ops')."""

    __tablename__ = "feedback_utterances"

    feedback_id: Mapped[str] = mapped_column(ForeignKey("feedback.id"), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("production_utterances.request_id"), primary_key=True,
                                            index=True)


class SliceMetric(Base):
    """One monitored number for one slice over one window: online WER/CER, confidence, input drift (PSI),
    VOC rate … ``slice_key`` is dialect / age_band / environment / device_type, or ``all`` (value ``all``);
    ``model_version`` ``""`` means every version. The drift job upserts; dashboards and reports read."""

    __tablename__ = "slice_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    window_end: Mapped[datetime] = mapped_column(index=True)
    window_s: Mapped[int] = mapped_column(Integer)
    slice_key: Mapped[str] = mapped_column(String(32))
    slice_value: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(128), default="")
    metric: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer, default=0)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)

    # The dashboard reads one metric over a time range (the unique key starts with window_end, which
    # would make it scan every metric of the range); version and slice key in the index filter without
    # reading rows.
    __table_args__ = (UniqueConstraint("window_end", "window_s", "slice_key", "slice_value", "model_version",
                                       "metric", name="uq_slice_metric"),
                      Index("ix_slice_metrics_metric_window", "metric", "window_s", "window_end", "model_version",
                            "slice_key"))


class Alert(Base):
    """A monitored number out of bounds (e.g. a slice's WER above its baseline beyond the confidence
    interval). Stored once per window; exported as a metric; the retraining DAG reads open ones."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("alr"))
    kind: Mapped[str] = mapped_column(String(32))
    slice_key: Mapped[str] = mapped_column(String(32))
    slice_value: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    baseline: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    window_end: Mapped[datetime] = mapped_column()
    model_version: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (UniqueConstraint("kind", "slice_key", "slice_value", "metric", "window_end", "model_version",
                                       name="uq_alert_window"),)


class ReleaseDecision(Base):
    """One step of a release and what decided it: the offline gate (``gate``), shadow and canary on live
    traffic, promotion or rollback. ``verdict``: pass / fail / wait / promoted / rolled_back; ``numbers``:
    the gate's per-slice figures (asr.gate.GateDecision). ``run_key`` names the attempt (Airflow run),
    so a retried step records once."""

    __tablename__ = "release_decisions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rel"))
    model_name: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str | None] = mapped_column(String(64))  # MLflow training run of the candidate
    model_version: Mapped[str | None] = mapped_column(String(32))  # registry version (None: never registered)
    champion_version: Mapped[str | None] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    numbers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_key: Mapped[str] = mapped_column(String(250))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (UniqueConstraint("model_name", "run_id", "stage", "run_key", name="uq_release_step"),)


class EvalRun(Base):
    """Model version × dataset version → metrics per slice with confidence intervals."""

    __tablename__ = "eval_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(String(128))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    split: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("model_version", "dataset_id", "split", name="uq_eval_run"),)


class AuditEntry(Base):
    """Who did what to personal data (consent, deletion, exports). Never holds the subject's id in clear."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    subject_digest: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
