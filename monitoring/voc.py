"""VOC (voice of the customer): take complaints in, triage them, send them to labeling, follow them to a fix.

    fb, created = intake_device_feedback(session, device_id="kitchen-01", request_id="req-…",
                                         category="misrecognized", text="불 켜랬는데")
    fb = log_complaint(session, device_id="kitchen-01", occurred_at=t, category="no_response",
                       text="call centre: …", actor="mina")         # links the utterances within ±10 min
    triage(session, fb.id, actor="mina")                            # causes + priority, new → triaged
    task = send_to_labeling(session, fb.id, actor="mina")          # a `voc` label task (consented audio only)
    sync_labeled(session)                                           # triaged → labeled once its label is reviewed
    set_status(session, fb.id, "fixed", actor="mina", fixed_in_model_version="7")

Every status change is a :class:`~collection.models.FeedbackEvent` (who, when, from, to, why). Causes are
tagged from the linked utterances' service log (confidence, SNR, grammar, how a stream ended: numbers
kept without consent) and the speaker's slice; they are guesses that order the inbox, not verdicts.
Functions take the caller's session and never commit. Queries for the inbox, one complaint and the VOC
rate per slice live in :mod:`monitoring.voc_queries`. docs/monitoring.md ("VOC") has the decisions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased

from collection.labeling import REASON_PRIORITY, create_tasks, human_review_allowed
from collection.models import (
    Device,
    Feedback,
    FeedbackEvent,
    FeedbackUtterance,
    Label,
    LabelTask,
    ProductionUtterance,
    Recording,
    aware,
    utcnow,
)
from collection.studio.personas import OLDER_AGE_BANDS
from monitoring import metrics
from monitoring.slices import ALL, SLICE_KEYS, UNKNOWN
from monitoring.timerange import MonitoringError, as_utc

CATEGORIES = ("misrecognized", "wrong_action", "no_response", "too_slow", "other")
SOURCES = ("device", "ops")
STATUSES = ("new", "triaged", "labeled", "fixed", "closed")
# new → triaged → labeled → fixed, or closed from anywhere open; a fixed or closed complaint that comes
# back is reopened as triaged (its causes and label task stay).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("triaged", "closed"),
    "triaged": ("labeled", "fixed", "closed"),
    "labeled": ("fixed", "closed"),
    "fixed": ("triaged", "closed"),
    "closed": ("triaged",),
}
#: causes tagged from the linked utterances; a slice cause reads ``slice:<key>=<value>``
CAUSES = ("low_confidence", "low_snr", "out_of_grammar", "endpoint_cutoff")
SLICE_CAUSE = re.compile(r"^slice:(dialect|age_band|environment|device_type)=[A-Za-z0-9_+.-]{1,64}$")
# Priority (higher first) = category + each cause + a bonus for a customer who called in. A wrong action
# is worse than "sorry?"; slices the loop curates (dialects, older speakers) rank like a model fault.
CATEGORY_PRIORITY = {"wrong_action": 40, "misrecognized": 30, "no_response": 20, "too_slow": 10, "other": 10}
CAUSE_PRIORITY = {"low_confidence": 10, "low_snr": 5, "out_of_grammar": 10, "endpoint_cutoff": 10, "slice": 15}
OPS_PRIORITY = 10
MAX_TEXT = 2000  # characters of complaint text (the device route refuses longer with 422)
MAX_LINKED = 50  # utterances an ops complaint links at most (the nearest to its time)
MAX_FUTURE = timedelta(minutes=5)  # clock skew allowed for an ops complaint's time
MAX_AGE = timedelta(days=366)  # an ops complaint about something older than this is a typo


@dataclass(frozen=True)
class TriageConfig:
    """Thresholds of the automatic causes. Confidence 0..1, SNR dB, seconds; ``link_window``: how far
    around an ops complaint's time its device's utterances are linked."""

    low_confidence: float = 0.6
    low_snr_db: float = 10.0
    endpoint_min_s: float = 1.0
    link_window: timedelta = timedelta(minutes=10)
    standard_dialect: str = "standard"
    older_age_bands: tuple[str, ...] = field(default=OLDER_AGE_BANDS)

    @classmethod
    def from_settings(cls, settings: Any) -> TriageConfig:  # noqa: ANN401 - voiceloop.settings.Settings
        return cls(low_confidence=settings.voc_low_confidence, low_snr_db=settings.voc_low_snr_db,
                   endpoint_min_s=settings.voc_endpoint_min_seconds,
                   link_window=timedelta(minutes=settings.voc_link_window_minutes))


# -- small helpers ---------------------------------------------------------------------------------
def _check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise MonitoringError("invalid", f"unknown category {category!r}; valid: {list(CATEGORIES)}")


def _check_text(text: str | None, what: str = "text") -> str | None:
    if text is not None and len(text) > MAX_TEXT:
        raise MonitoringError("invalid", f"{what} has {len(text)} characters; at most {MAX_TEXT}")
    return text or None


def get_feedback(session: Session, feedback_id: str, *, lock: bool = False) -> Feedback:
    """The complaint (row-locked on PostgreSQL with ``lock``, so two ops users take turns)."""
    fb = session.get(Feedback, feedback_id, with_for_update=lock or None)
    if fb is None:
        raise MonitoringError("not_found", f"no complaint {feedback_id!r}")
    return fb


def _snapshot(fb: Feedback, device: Device | None) -> None:
    """The slice of the device owner now, onto the complaint."""
    if device is not None:
        fb.dialect, fb.age_band, fb.environment = device.region, device.age_band, device.environment
        fb.device_type = device.device_type


def _event(session: Session, fb: Feedback, to_status: str, actor: str, note: str | None, now: datetime) -> None:
    session.add(FeedbackEvent(feedback_id=fb.id, at=now, actor=actor[:64], from_status=fb.status,
                              to_status=to_status, note=note))
    fb.status, fb.updated_at = to_status, now


def _count_intake(fb: Feedback) -> None:
    metrics.VOC_RECEIVED.labels(fb.source, fb.category, ALL, ALL).inc()
    for key in SLICE_KEYS:
        metrics.VOC_RECEIVED.labels(fb.source, fb.category, key, getattr(fb, key) or UNKNOWN).inc()


# -- causes and priority ---------------------------------------------------------------------------
def utterance_causes(utt: ProductionUtterance, config: TriageConfig = TriageConfig()) -> list[str]:
    """The likely causes one utterance shows (in :data:`CAUSES` order)."""
    found = set()
    if utt.confidence is not None and utt.confidence < config.low_confidence:
        found.add("low_confidence")
    if utt.snr_db is not None and utt.snr_db < config.low_snr_db:
        found.add("low_snr")
    if utt.in_grammar is False:
        found.add("out_of_grammar")
    short = utt.duration_s is not None and utt.duration_s < config.endpoint_min_s
    if utt.ended_by == "max_seconds" or (utt.ended_by == "endpoint" and short):
        found.add("endpoint_cutoff")
    return [c for c in CAUSES if c in found]


def slice_causes(dialect: str | None, age_band: str | None, config: TriageConfig = TriageConfig()) -> list[str]:
    """``slice:dialect=…`` for a regional dialect, ``slice:age_band=…`` for an older speaker."""
    out = []
    if dialect and dialect != config.standard_dialect:
        out.append(f"slice:dialect={dialect}")
    if age_band in config.older_age_bands:
        out.append(f"slice:age_band={age_band}")
    return out


def priority_of(category: str, source: str, causes: Sequence[str]) -> int:
    return (CATEGORY_PRIORITY.get(category, 0) + (OPS_PRIORITY if source == "ops" else 0)
            + sum(CAUSE_PRIORITY["slice" if c.startswith("slice:") else c] for c in causes))


def linked_utterances(session: Session, feedback_id: str) -> list[ProductionUtterance]:
    """The utterances a complaint is about, oldest first."""
    return list(session.scalars(select(ProductionUtterance)
                                .join(FeedbackUtterance, FeedbackUtterance.request_id == ProductionUtterance.request_id)
                                .where(FeedbackUtterance.feedback_id == feedback_id)
                                .order_by(ProductionUtterance.created_at, ProductionUtterance.request_id)))


def _tag(session: Session, fb: Feedback, config: TriageConfig) -> None:
    """Causes (any linked utterance showing one) and the priority that follows."""
    found = {c for utt in linked_utterances(session, fb.id) for c in utterance_causes(utt, config)}
    fb.causes = [c for c in CAUSES if c in found] + slice_causes(fb.dialect, fb.age_band, config)
    fb.priority = priority_of(fb.category, fb.source, fb.causes)


# -- intake ----------------------------------------------------------------------------------------
def intake_device_feedback(session: Session, *, device_id: str, request_id: str, category: str,
                           text: str | None = None, config: TriageConfig = TriageConfig(),
                           now: datetime | None = None) -> tuple[Feedback, bool]:
    """A device's complaint about one of its own requests: ``(feedback, created)``.

    The same complaint again (same request, category and text: a retried POST) returns the first one with
    ``created`` False, so a retry never doubles it. Causes and priority are tagged at once; the status
    stays ``new`` until someone triages it.

    Raises:
        MonitoringError: ``not_found`` for an unknown request or another device's (the caller cannot tell which),
            ``invalid`` for an unknown category or a text over :data:`MAX_TEXT` characters.
    """
    _check_category(category)
    text = _check_text(text)
    now = now or utcnow()
    # Locked on PostgreSQL: two copies of one complaint arriving at once take turns, so the second finds
    # the first (SQLite transactions take the write lock up front and already take turns).
    utt = session.get(ProductionUtterance, request_id, with_for_update=True)
    if utt is None or utt.device_id != device_id:
        raise MonitoringError("not_found", f"no request {request_id!r} from this device")
    same_text = Feedback.text.is_(None) if text is None else Feedback.text == text
    earlier = session.scalar(select(Feedback).where(Feedback.request_id == request_id, Feedback.device_id == device_id,
                                                    Feedback.source == "device", Feedback.category == category,
                                                    same_text).limit(1))
    if earlier is not None:
        return earlier, False
    fb = Feedback(source="device", request_id=request_id, device_id=device_id, category=category, text=text,
                  status="new", created_at=now, updated_at=now, occurred_at=aware(utt.created_at))
    _snapshot(fb, session.get(Device, device_id))
    session.add(fb)
    session.flush()
    session.add(FeedbackUtterance(feedback_id=fb.id, request_id=request_id))
    session.add(FeedbackEvent(feedback_id=fb.id, at=now, actor=f"device:{device_id}"[:64], from_status=None,
                              to_status="new", note="created"))
    session.flush()
    _tag(session, fb, config)
    _count_intake(fb)
    return fb, True


def log_complaint(session: Session, *, device_id: str, occurred_at: datetime, category: str, text: str | None,
                  actor: str, config: TriageConfig = TriageConfig(), now: datetime | None = None) -> Feedback:
    """A complaint ops took (a call-centre contact) about a device around a time. Links the device's
    utterances within ``config.link_window`` of ``occurred_at`` (the :data:`MAX_LINKED` nearest) and tags
    causes; status ``new``. A complaint with no utterance in the window is kept too (it says so).

    Raises:
        MonitoringError: ``not_found`` (no such device), ``invalid`` (category, text, a time in the future or
            more than a year back).
    """
    _check_category(category)
    text = _check_text(text)
    now = now or utcnow()
    occurred_at = as_utc(occurred_at)
    if occurred_at > now + MAX_FUTURE:
        raise MonitoringError("invalid",
                              f"occurred_at {occurred_at.isoformat()} is in the future (now {now.isoformat()})")
    if occurred_at < now - MAX_AGE:
        raise MonitoringError("invalid", f"occurred_at {occurred_at.isoformat()} is more than {MAX_AGE.days} days ago")
    device = session.get(Device, device_id)
    if device is None:
        raise MonitoringError("not_found", f"no device {device_id!r}")
    window = config.link_window
    near = session.execute(select(ProductionUtterance.request_id, ProductionUtterance.created_at)
                           .where(ProductionUtterance.device_id == device_id,
                                  ProductionUtterance.created_at >= occurred_at - window,
                                  ProductionUtterance.created_at <= occurred_at + window)).all()
    near = sorted(near, key=lambda r: (abs(aware(r[1]) - occurred_at), r[0]))[:MAX_LINKED]
    fb = Feedback(source="ops", device_id=device_id, category=category, text=text, status="new", created_at=now,
                  updated_at=now, occurred_at=occurred_at, created_by=actor[:64])
    _snapshot(fb, device)
    session.add(fb)
    session.flush()
    session.add_all(FeedbackUtterance(feedback_id=fb.id, request_id=rid) for rid, _ in near)
    minutes = window.total_seconds() / 60
    session.add(FeedbackEvent(feedback_id=fb.id, at=now, actor=actor[:64], from_status=None, to_status="new",
                              note=f"created; {len(near)} utterance(s) within ±{minutes:g} min linked"))
    session.flush()
    _tag(session, fb, config)
    _count_intake(fb)
    return fb


# -- workflow --------------------------------------------------------------------------------------
def triage(session: Session, feedback_id: str, *, actor: str, config: TriageConfig = TriageConfig(),
           now: datetime | None = None) -> Feedback:
    """Re-tag the causes and priority and move ``new`` → ``triaged`` (a ``triaged`` complaint is re-tagged
    only). Raises MonitoringError(conflict) once it is labeled, fixed or closed."""
    fb = get_feedback(session, feedback_id, lock=True)
    if fb.status not in ("new", "triaged"):
        raise MonitoringError("conflict", f"complaint {fb.id} is {fb.status}; triage applies to new or triaged ones")
    _tag(session, fb, config)
    if fb.status == "new":
        _event(session, fb, "triaged", actor, f"causes: {', '.join(fb.causes) or 'none found'}", now or utcnow())
    session.flush()
    return fb


def set_status(session: Session, feedback_id: str, status: str, *, actor: str, note: str | None = None,
               fixed_in_model_version: str | None = None, now: datetime | None = None) -> Feedback:
    """Move a complaint along :data:`TRANSITIONS`; ``fixed`` needs the model version that fixed it.

    Raises:
        MonitoringError: ``invalid`` (unknown status, a fix without its version, a note too long), ``conflict``
            (a move the workflow does not allow from the current status; the message lists the allowed).
    """
    if status not in STATUSES:
        raise MonitoringError("invalid", f"unknown status {status!r}; valid: {list(STATUSES)}")
    note = _check_text(note, "note")
    version = (fixed_in_model_version or "").strip() or None
    if status == "fixed" and version is None:
        raise MonitoringError("invalid", "status fixed needs fixed_in_model_version (the model version that fixes it)")
    if version is not None and (status != "fixed" or len(version) > 128):
        raise MonitoringError("invalid",
                              "fixed_in_model_version goes with status fixed only, and has at most 128 characters")
    fb = get_feedback(session, feedback_id, lock=True)
    if status not in TRANSITIONS[fb.status]:
        raise MonitoringError("conflict", f"complaint {fb.id} is {fb.status}; from there it can go to "
                                   f"{list(TRANSITIONS[fb.status])}, not {status!r}")
    if status == "fixed":
        fb.fixed_in_model_version = version
        note = note or f"fixed in model version {version}"
    _event(session, fb, status, actor, note, now or utcnow())
    session.flush()
    return fb


# -- labeling --------------------------------------------------------------------------------------
def send_to_labeling(session: Session, feedback_id: str, *, actor: str, config: TriageConfig = TriageConfig(),
                     double_share: float = 0.0, now: datetime | None = None) -> LabelTask:
    """Queue the complaint's audio for transcription (reason ``voc``, priority 100 + the complaint's) and
    link the round-1 task of the utterance nearest the complaint. A ``new`` complaint is triaged first.
    Sending again returns the linked task. If the audio already has a reviewed label the complaint moves
    to ``labeled`` at once.

    Raises:
        MonitoringError: ``conflict`` when there is nothing people may listen to (the message says why: no
            utterance linked, no audio kept because the owner's consent does not cover training, or a
            consent without human review), or the complaint is already labeled, fixed or closed.
    """
    now = now or utcnow()
    fb = get_feedback(session, feedback_id, lock=True)
    if fb.label_task_id and (task := session.get(LabelTask, fb.label_task_id)) is not None:
        return task
    if fb.status not in ("new", "triaged"):
        raise MonitoringError("conflict",
                              f"complaint {fb.id} is {fb.status}; only new or triaged complaints go to labeling")
    listenable = _listenable_recordings(session, fb)
    if fb.status == "new":
        triage(session, fb.id, actor=actor, config=config, now=now)
    create_tasks(session, listenable, reason="voc", priority=REASON_PRIORITY["voc"] + fb.priority,
                 double_share=double_share, feedback_id=fb.id)
    task = session.scalars(select(LabelTask).where(LabelTask.recording_id == listenable[0])
                           .order_by((LabelTask.status == "open").desc(), LabelTask.round)).first()
    if task is None:  # create_tasks found the recording no longer listenable (a consent revoked meanwhile)
        raise MonitoringError("conflict", f"recording {listenable[0]} could not be queued: its consent changed")
    fb.label_task_id = task.id
    _event(session, fb, fb.status, actor, f"sent to labeling: task {task.id} ({len(listenable)} recording(s))", now)
    session.flush()
    sync_labeled(session, feedback_ids=[fb.id], now=now)
    return task


def _listenable_recordings(session: Session, fb: Feedback) -> list[str]:
    """Recording ids of the linked utterances people may listen to, the nearest to the complaint first;
    raises MonitoringError(conflict) saying why there are none."""
    linked = linked_utterances(session, fb.id)
    if not linked:
        raise MonitoringError("conflict", f"complaint {fb.id} is linked to no utterance: there is no audio to label")
    kept = [u for u in linked if u.recording_id]
    if not kept:
        raise MonitoringError("conflict", f"no audio was kept for the {len(linked)} utterance(s) of complaint {fb.id}: "
                                   "the device owner's consent does not allow keeping audio (scope training)")
    allowed = set(session.scalars(select(Recording.id).where(Recording.id.in_([u.recording_id for u in kept]),
                                                             human_review_allowed())))
    if not allowed:
        raise MonitoringError("conflict", f"the audio of complaint {fb.id} may not be listened to: the device owner's "
                                   "consent does not allow human review")
    at = aware(fb.occurred_at) if fb.occurred_at else None
    kept.sort(key=lambda u: (abs(aware(u.created_at) - at) if at else timedelta(0), u.request_id))
    return list(dict.fromkeys(u.recording_id for u in kept if u.recording_id in allowed))


def sync_labeled(session: Session, *, feedback_ids: Sequence[str] | None = None, actor: str = "labeling",
                 now: datetime | None = None) -> list[str]:
    """Move ``triaged`` complaints whose label task's recording has a reviewed label to ``labeled``;
    returns their ids. Idempotent: the labeling flow (after a review) or a job may call it any time."""
    task = aliased(LabelTask)
    reviewed = (select(Label.id).join(task, task.recording_id == Label.recording_id)
                .where(task.id == Feedback.label_task_id, Label.status == "reviewed")
                .order_by(Label.round).limit(1).scalar_subquery())
    query = select(Feedback, reviewed).where(and_(Feedback.status == "triaged", Feedback.label_task_id.is_not(None),
                                                  reviewed.is_not(None)))
    if feedback_ids is not None:
        query = query.where(Feedback.id.in_(list(feedback_ids)))
    now = now or utcnow()
    moved = []
    for fb, label_id in session.execute(query.order_by(Feedback.id)).all():
        _event(session, fb, "labeled", actor, f"label {label_id} reviewed", now)
        moved.append(fb.id)
    session.flush()
    return moved
