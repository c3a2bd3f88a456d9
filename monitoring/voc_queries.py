"""Reading VOC: the inbox (filters, linked utterances, reference vs hypothesis, counts for the filter
menus), one complaint with its history, the VOC rate per slice over time.

    page = list_feedback(session, FeedbackFilter(slice_key="dialect", slice_value="gyeongsang", status="new"))
    detail = feedback_detail(session, "voc-…")      # utterances, causes, reference transcript, events
    rows = voc_rate(session, since=t0, until=t1, bucket_s=86400, slice_key="age_band")

The ops page, the JSON API and the report all list through :func:`list_feedback`. Aggregation happens in
the database (GROUP BY time bucket and slice; a page of complaints is one query plus one per related
table for the whole page), so ten thousand complaints and a million utterances cost indexed range scans,
not Python loops (bench/voc_rate.py, bench/dashboard_api.py measure it). Time ranges are checked by
:func:`monitoring.timerange.check_range`, as everywhere in monitoring.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from collection.labeling import UNUSABLE_FLAGS, edit_distance, human_review_allowed
from collection.models import Feedback, FeedbackEvent, FeedbackUtterance, Label, ProductionUtterance, Recording, aware
from monitoring.dashboard import jsonable
from monitoring.slices import ALL, SLICE_KEYS, UNKNOWN
from monitoring.timerange import MonitoringError, check_range
from monitoring.traffic import floor_hour, hourly_traffic
from monitoring.voc import (
    CATEGORIES,
    CAUSES,
    SLICE_CAUSE,
    SOURCES,
    STATUSES,
    TriageConfig,
    get_feedback,
    linked_utterances,
    utterance_causes,
)

MAX_BUCKETS = 2000  # buckets a rate query may make (30 days hourly = 720)
MAX_PAGE = 500
OPEN_STATUSES = ("new", "triaged", "labeled")  # the status filter "open"


# -- the inbox -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedbackFilter:
    """Inbox filters (None = any). ``slice_value`` ``unknown`` matches complaints with no profile value;
    ``status`` ``open`` = new, triaged or labeled; ``since``/``until`` bound the time the complaint came in."""

    slice_key: str | None = None
    slice_value: str | None = None
    cause: str | None = None
    status: str | None = None
    category: str | None = None
    source: str | None = None
    device_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, *, slice: str | None = None, **filters: str | None) -> FeedbackFilter:  # noqa: A002
        """From a page's query string: ``slice`` reads ``key=value`` (``dialect=jeolla``); empty = any."""
        key = value = None
        if slice:
            key, sep, value = slice.partition("=")
            if not sep:
                raise MonitoringError("invalid", f"slice {slice!r}: write key=value, e.g. dialect=jeolla")
        return cls(slice_key=key or None, slice_value=value or None, **{k: v or None for k, v in filters.items()})

    def where(self) -> list[ColumnElement[bool]]:
        """SQL conditions; raises MonitoringError(invalid) naming the bad filter and the valid values."""
        for name, value, valid in (("status", self.status, (*STATUSES, "open")),
                                   ("category", self.category, CATEGORIES), ("source", self.source, SOURCES)):
            if value is not None and value not in valid:
                raise MonitoringError("invalid", f"unknown {name} {value!r}; valid: {list(valid)}")
        since, until = check_range(self.since, self.until)
        out: list[ColumnElement[bool]] = []
        if self.slice_key is not None or self.slice_value is not None:
            if self.slice_key is not None and self.slice_key not in SLICE_KEYS:
                raise MonitoringError("invalid", f"unknown slice key {self.slice_key!r}; valid: {list(SLICE_KEYS)}")
            if self.slice_key is None or not self.slice_value or len(self.slice_value) > 64:
                raise MonitoringError("invalid", f"a slice filter needs slice_key (one of {list(SLICE_KEYS)}) "
                                                 f"and slice_value, got {self.slice_key!r}={self.slice_value!r}")
            column = getattr(Feedback, self.slice_key)
            out.append(column.is_(None) if self.slice_value == UNKNOWN else column == self.slice_value)
        if self.cause is not None:
            if self.cause not in CAUSES and not SLICE_CAUSE.match(self.cause):
                raise MonitoringError("invalid", f"unknown cause {self.cause!r}; valid: {list(CAUSES)} or "
                                                 "slice:<dialect|age_band|environment|device_type>=<value>")
            # causes is a JSON list of our own tags: its text holds "<cause>" exactly when the list does
            escaped = self.cause.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            out.append(cast(Feedback.causes, String).like(f'%"{escaped}"%', escape="\\"))
        if self.status == "open":
            out.append(Feedback.status.in_(OPEN_STATUSES))
        elif self.status is not None:
            out.append(Feedback.status == self.status)
        for name in ("category", "source", "device_id"):
            if (value := getattr(self, name)) is not None:
                out.append(getattr(Feedback, name) == value)
        if since is not None:
            out.append(Feedback.created_at >= since)
        if until is not None:
            out.append(Feedback.created_at < until)
        return out


@dataclass(frozen=True)
class DiffOp:
    """One run of a character diff: ``op`` equal / replace / delete (only in the reference) / insert."""

    op: str
    reference: str
    hypothesis: str


def char_diff(reference: str, hypothesis: str) -> list[DiffOp]:
    """Runs of equal and differing characters between what was said and what the model heard."""
    matcher = difflib.SequenceMatcher(None, reference, hypothesis, autojunk=False)
    return [DiffOp(op, reference[i1:i2], hypothesis[j1:j2]) for op, i1, i2, j1, j2 in matcher.get_opcodes()]


@dataclass(frozen=True)
class UtteranceView:
    request_id: str
    created_at: datetime
    model_version: str | None
    hypothesis: str | None  # None: not kept (no consent in force)
    confidence: float | None
    snr_db: float | None
    duration_s: float | None
    ended_by: str | None
    in_grammar: bool | None
    recording_id: str | None
    audio: bool  # kept, and people may listen to it
    reference: str | None
    reference_status: str | None  # reviewed / submitted
    diff: list[DiffOp] = field(default_factory=list)
    cer: float | None = None


@dataclass(frozen=True)
class InboxItem:
    """A complaint as the inbox lists it (text exactly as given: showing it safely is the page's job)."""

    id: str
    created_at: datetime
    updated_at: datetime | None
    occurred_at: datetime | None
    source: str
    category: str
    text: str | None
    status: str
    causes: list[str]
    priority: int
    device_id: str | None
    request_id: str | None
    created_by: str | None
    label_task_id: str | None
    fixed_in_model_version: str | None
    slice: dict[str, str | None]
    utterances: list[UtteranceView]


@dataclass(frozen=True)
class FeedbackPage:
    filter: FeedbackFilter
    total: int  # complaints matching the filter
    limit: int
    offset: int
    items: list[InboxItem]
    facets: dict[str, dict[str, int]] | None  # status / cause / category / source / <slice key> -> value -> n

    def to_dict(self) -> dict[str, Any]:
        return jsonable(self)


def list_feedback(session: Session, filters: FeedbackFilter = FeedbackFilter(), *, limit: int = 50,
                  offset: int = 0, facets: bool = False) -> FeedbackPage:
    """One page of complaints matching ``filters`` (highest priority first, newest first within) with their
    utterances; ``total`` counts all matches; ``facets``: counts over the whole inbox (within the filter's
    time range) for the filter menus."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise MonitoringError("invalid", f"limit must be 1-{MAX_PAGE} and offset >= 0, got {limit} and {offset}")
    where = filters.where()
    total = session.scalar(select(func.count()).select_from(Feedback).where(*where)) or 0
    rows = list(session.scalars(select(Feedback).where(*where)
                                .order_by(Feedback.priority.desc(), Feedback.created_at.desc(), Feedback.id)
                                .limit(limit).offset(offset)))
    utterances = _utterances(session, rows)
    items = [InboxItem(fb.id, aware(fb.created_at), aware(fb.updated_at) if fb.updated_at else None,
                       aware(fb.occurred_at) if fb.occurred_at else None, fb.source, fb.category, fb.text, fb.status,
                       list(fb.causes or []), fb.priority, fb.device_id, fb.request_id, fb.created_by,
                       fb.label_task_id, fb.fixed_in_model_version, {k: getattr(fb, k) for k in SLICE_KEYS},
                       utterances.get(fb.id, []))
             for fb in rows]
    counts = None
    if facets:
        counts = feedback_facets(session, FeedbackFilter(since=filters.since, until=filters.until).where())
    return FeedbackPage(filters, int(total), limit, offset, items, counts)


def feedback_facets(session: Session, where: list | None = None) -> dict[str, dict[str, int]]:
    """Counts of complaints (all, or those matching ``where``) per status, cause, category, source and slice
    value: one GROUP BY each."""
    where = where or []
    out: dict[str, dict[str, int]] = {}
    for name in ("status", "category", "source", *SLICE_KEYS):
        column = getattr(Feedback, name)
        out[name] = {(v if v is not None else UNKNOWN): n for v, n in session.execute(
            select(column, func.count()).where(*where).group_by(column).order_by(column))}
    causes: dict[str, int] = {}
    text = cast(Feedback.causes, String)
    for tags, n in session.execute(select(text, func.count()).where(*where).group_by(text)):  # few combinations
        for tag in json.loads(tags) if tags else []:
            causes[tag] = causes.get(tag, 0) + n
    out["cause"] = dict(sorted(causes.items()))
    return out


def _utterances(session: Session, rows: list[Feedback]) -> dict[str, list[UtteranceView]]:
    """feedback id → its linked utterances (oldest first), loaded for the whole page at once."""
    if not rows:
        return {}
    ids = [fb.id for fb in rows]
    fu = FeedbackUtterance
    links = [(fid, rid) for fid, rid in session.execute(select(fu.feedback_id, fu.request_id)
                                                        .where(fu.feedback_id.in_(ids)))]
    links += [(fb.id, fb.request_id) for fb in rows if fb.request_id and (fb.id, fb.request_id) not in links]
    request_ids = {rid for _, rid in links}
    utts = {u.request_id: u for u in session.scalars(
        select(ProductionUtterance).where(ProductionUtterance.request_id.in_(request_ids)))} if request_ids else {}
    listenable = _listenable(session, [u.recording_id for u in utts.values() if u.recording_id])
    references = _references(session, listenable)  # people see transcripts only where they may listen
    out: dict[str, list[UtteranceView]] = {}
    for fid, rid in links:
        if (u := utts.get(rid)) is None:
            continue
        ref = references.get(u.recording_id) if u.recording_id else None
        diff, cer = [], None
        if ref is not None and u.hypothesis is not None:
            diff = char_diff(ref["text"], u.hypothesis)
            cer = round(edit_distance(ref["text"], u.hypothesis) / max(len(ref["text"]), 1), 4)
        out.setdefault(fid, []).append(UtteranceView(
            u.request_id, aware(u.created_at), u.model_version, u.hypothesis, u.confidence, u.snr_db, u.duration_s,
            u.ended_by, u.in_grammar, u.recording_id, u.recording_id in listenable,
            ref["text"] if ref else None, ref["status"] if ref else None, diff, cer))
    for views in out.values():
        views.sort(key=lambda v: (v.created_at, v.request_id))
    return out


def _listenable(session: Session, recording_ids: Sequence[str]) -> set[str]:
    """The recordings among these whose consent lets people listen (human review)."""
    if not recording_ids:
        return set()
    return set(session.scalars(select(Recording.id).where(Recording.id.in_(list(recording_ids)),
                                                          human_review_allowed())))


def _references(session: Session, recording_ids: Sequence[str] | set[str]) -> dict[str, dict[str, str]]:
    """``{recording_id: {label_id, text, status}}``: what a person says was said — the reviewed transcript
    (as the training data reads it), else the latest submitted one; labels flagged unusable never count."""
    out: dict[str, dict[str, str]] = {}
    if not recording_ids:
        return out
    stmt = (select(Label).where(Label.recording_id.in_(list(recording_ids)),
                                Label.status.in_(("reviewed", "submitted")), Label.text.is_not(None))
            .order_by(Label.recording_id, Label.round, Label.submitted_at))
    for label in session.scalars(stmt):
        if set(label.flags or ()) & set(UNUSABLE_FLAGS):
            continue
        held = out.get(label.recording_id)
        if held is None or held["status"] != "reviewed":  # the first reviewed one wins; else the latest submitted
            out[label.recording_id] = {"label_id": label.id, "text": label.text, "status": label.status}
    return out


def _iso(dt: datetime | None) -> str | None:
    return aware(dt).isoformat() if dt is not None else None


def feedback_detail(session: Session, feedback_id: str, config: TriageConfig = TriageConfig()) -> dict[str, Any]:
    """The complaint, its status history and its utterances: hypothesis (stored only under the owner's
    consent), confidence, command, input features, causes, whether people may listen to the audio
    (``audio``: consent with human review) and the reviewed reference transcript when one exists."""
    fb = get_feedback(session, feedback_id)
    utts = linked_utterances(session, fb.id)
    listenable = _listenable(session, [u.recording_id for u in utts if u.recording_id])
    references = _references(session, sorted(listenable))
    utterances = [{
        "request_id": u.request_id, "created_at": _iso(u.created_at), "channel": u.channel,
        "model_version": u.model_version, "route": u.route, "hypothesis": u.hypothesis, "confidence": u.confidence,
        "command": u.command, "in_grammar": u.in_grammar, "duration_s": u.duration_s, "ended_by": u.ended_by,
        "speech_dbfs": u.speech_dbfs, "snr_db": u.snr_db, "speech_rate": u.speech_rate,
        "slice": {k: getattr(u, k) for k in SLICE_KEYS}, "causes": utterance_causes(u, config),
        "audio": u.recording_id in listenable,
        "reference": references.get(u.recording_id) if u.recording_id else None,
    } for u in utts]
    events = [{"at": _iso(e.at), "actor": e.actor, "from_status": e.from_status, "to_status": e.to_status,
               "note": e.note}
              for e in session.scalars(select(FeedbackEvent).where(FeedbackEvent.feedback_id == fb.id)
                                       .order_by(FeedbackEvent.at, FeedbackEvent.id))]
    summary = {"id": fb.id, "source": fb.source, "category": fb.category, "text": fb.text, "status": fb.status,
               "priority": fb.priority, "causes": list(fb.causes or []), "device_id": fb.device_id,
               "request_id": fb.request_id, "slice": {k: getattr(fb, k) for k in SLICE_KEYS},
               "occurred_at": _iso(fb.occurred_at), "created_at": _iso(fb.created_at),
               "updated_at": _iso(fb.updated_at), "created_by": fb.created_by, "label_task_id": fb.label_task_id,
               "fixed_in_model_version": fb.fixed_in_model_version, "utterances": len(utts)}
    return {**summary, "linked": utterances, "events": events}


def linked_audio(session: Session, feedback_id: str, request_id: str) -> Recording:
    """The recording of one of the complaint's utterances, if people may listen to it.

    Raises:
        MonitoringError: ``not_found`` (no such complaint, the utterance is not linked to it, or no audio was
            kept), ``forbidden`` (the owner's consent does not allow human review).
    """
    get_feedback(session, feedback_id)
    utt = session.scalar(select(ProductionUtterance)
                         .join(FeedbackUtterance, FeedbackUtterance.request_id == ProductionUtterance.request_id)
                         .where(FeedbackUtterance.feedback_id == feedback_id,
                                ProductionUtterance.request_id == request_id))
    if utt is None:
        raise MonitoringError("not_found", f"request {request_id!r} is not linked to complaint {feedback_id}")
    if utt.recording_id is None:
        raise MonitoringError("not_found", f"no audio was kept for request {request_id!r} (no consent to keep it)")
    if session.scalar(select(Recording.id).where(Recording.id == utt.recording_id, human_review_allowed())) is None:
        raise MonitoringError("forbidden", f"the consent for request {request_id!r} does not allow human review")
    return session.get(Recording, utt.recording_id)


# -- VOC rate --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VocRate:
    """One time bucket of one slice: ``utterances`` served, ``voc`` complaints about that time,
    ``per_1000`` = voc / utterances × 1000 (None without utterances)."""

    bucket_start: datetime
    bucket_s: int
    slice_key: str
    slice_value: str
    utterances: int
    voc: int
    per_1000: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bucket_start": self.bucket_start.isoformat()}


def voc_rate(session: Session, *, since: datetime, until: datetime, bucket_s: int = 86400,
             slice_key: str = ALL, now: datetime | None = None) -> list[VocRate]:
    """VOC per 1,000 utterances for each time bucket × value of ``slice_key`` (``all`` for the whole
    traffic), oldest bucket first. Buckets are whole hours: ``bucket_s`` (a multiple of 3600) steps from
    ``since`` floored to the hour, up to ``until`` raised to the hour. Utterances count by the time they were
    served, complaints by the time they came in (``created_at``, as the drift job's ``voc_per_1k`` counts
    them, so the two agree and a past bucket keeps its value). A missing profile value reads ``unknown``.
    Buckets with neither utterances nor complaints are left out.

    Reads the hourly rollups of :mod:`monitoring.traffic` (computing and storing closed hours that have
    none — the caller commits; the hour still open is counted live), so a month costs a few thousand rows.

    Raises:
        MonitoringError(invalid): a bad range (:func:`check_range`), slice key, or a bucket size that is not
            a whole number of hours or would make more than :data:`MAX_BUCKETS` buckets.
    """
    if since is None or until is None:
        raise MonitoringError("invalid", "the VOC rate needs both since and until")
    since, until = check_range(since, until, now=now)
    if slice_key != ALL and slice_key not in SLICE_KEYS:
        raise MonitoringError("invalid", f"unknown slice key {slice_key!r}; valid: {[ALL, *SLICE_KEYS]}")
    if bucket_s < 3600 or bucket_s % 3600 or (until - since).total_seconds() / bucket_s > MAX_BUCKETS:
        raise MonitoringError("invalid", f"bucket_s must be a whole number of hours (3600, 86400, …) making at most "
                                         f"{MAX_BUCKETS} buckets over the range, got {bucket_s}")
    hours = hourly_traffic(session, since, until, now=now, slice_key=slice_key)
    start = floor_hour(since)
    counts: dict[tuple[int, str], list[int]] = {}
    for h in hours:
        b = int((h.start - start).total_seconds()) // bucket_s
        if slice_key == ALL:
            per_value = {ALL: (h.requests, h.voc)} if h.requests or h.voc else {}
        else:
            per_value = {value: (n, voc) for (key, value), (n, voc) in h.by_slice.items() if key == slice_key}
        for value, (n, voc) in per_value.items():
            c = counts.setdefault((b, value), [0, 0])
            c[0], c[1] = c[0] + n, c[1] + voc
    return [VocRate(start + timedelta(seconds=b * bucket_s), bucket_s, slice_key, v, n, voc,
                    round(voc / n * 1000, 3) if n else None)
            for (b, v), (n, voc) in sorted(counts.items())]


__all__ = ["FeedbackFilter", "FeedbackPage", "InboxItem", "UtteranceView", "VocRate", "char_diff", "feedback_detail",
           "feedback_facets", "linked_audio", "list_feedback", "voc_rate"]
