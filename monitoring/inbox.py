"""The VOC inbox as the ops dashboard shows it: complaints filtered by status, cause and slice, each with
the utterances it is about — what the model heard (hypothesis), what a person says was said (the
reviewed label of the kept audio, else a submitted one), their character diff, and whether people may
listen to the audio (its consent allows human review).

Counts per status, cause, category and slice come from ``GROUP BY`` in SQL; the page of complaints is
one query plus one query per related table for the whole page, so ten thousand complaints cost the same
as ten (:func:`monitoring.voc_queries.list_feedback` lists without the utterances; its detail view loads
one complaint). The workflow itself (triage, send to labeling, close) and the audio route are
:mod:`monitoring.voc`'s and ``/ops/api/voc``'s.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from collection.labeling import edit_distance, human_review_allowed
from collection.models import Feedback, FeedbackUtterance, Label, ProductionUtterance, Recording, aware
from monitoring.dashboard import DashboardError
from monitoring.slices import SLICE_KEYS, UNKNOWN  # UNKNOWN: a slice value the device profile did not have
from monitoring.voc import CATEGORIES, SOURCES, STATUSES

CAUSE = re.compile(r"^[a-z_]{1,32}$|^slice:(dialect|age_band|environment|device_type)=[A-Za-z0-9_+.-]{1,64}$")
MAX_PAGE = 200
OPEN_STATUSES = ("new", "triaged", "labeled")


@dataclass(frozen=True)
class InboxFilter:
    """Which complaints to list; None = any. ``slice_value`` ``unknown`` matches a missing profile field;
    ``status`` ``open`` = new, triaged or labeled."""

    status: str | None = None
    cause: str | None = None
    category: str | None = None
    source: str | None = None
    slice_key: str | None = None
    slice_value: str | None = None
    since: datetime | None = None  # came in at or after (the report's range)
    until: datetime | None = None

    def __post_init__(self) -> None:
        def check(name: str, value: str | None, valid: tuple[str, ...]) -> None:
            if value is not None and value not in valid:
                raise DashboardError("invalid", f"unknown {name} {value!r}; valid: {list(valid)}")

        check("status", self.status, (*STATUSES, "open"))
        check("category", self.category, CATEGORIES)
        check("source", self.source, SOURCES)
        check("slice key", self.slice_key, SLICE_KEYS)
        if self.cause is not None and not CAUSE.match(self.cause):
            raise DashboardError("invalid", f"cause {self.cause!r}: a tag such as low_confidence, low_snr, "
                                            "out_of_grammar, endpoint_cutoff or slice:dialect=jeolla")
        if (self.slice_key is None) != (self.slice_value is None):
            raise DashboardError("invalid", "give slice_key and slice_value together (e.g. dialect and jeolla)")
        if self.slice_value is not None and not 0 < len(self.slice_value) <= 64:
            raise DashboardError("invalid", "slice_value must be 1-64 characters")

    @classmethod
    def parse(cls, *, status: str | None = None, cause: str | None = None, category: str | None = None,
              source: str | None = None, slice: str | None = None) -> InboxFilter:  # noqa: A002
        """From query parameters; ``slice`` reads ``key=value`` (``dialect=jeolla``); empty strings = any."""
        key = value = None
        if slice:
            key, sep, value = slice.partition("=")
            if not sep:
                raise DashboardError("invalid", f"slice {slice!r}: write key=value, e.g. dialect=jeolla")
        return cls(status or None, cause or None, category or None, source or None, key or None, value or None)

    def conditions(self) -> list:  # noqa: ANN201 - SQL conditions on Feedback
        where = []
        if self.status == "open":
            where.append(Feedback.status.in_(OPEN_STATUSES))
        elif self.status:
            where.append(Feedback.status == self.status)
        if self.category:
            where.append(Feedback.category == self.category)
        if self.source:
            where.append(Feedback.source == self.source)
        if self.cause:
            # causes is a JSON list of tags; its text holds each tag quoted, so a quoted substring is exact
            where.append(cast(Feedback.causes, Text).contains(json.dumps(self.cause), autoescape=True))
        if self.slice_key:
            column = getattr(Feedback, self.slice_key)
            where.append(column.is_(None) if self.slice_value == UNKNOWN else column == self.slice_value)
        return where + self.range()

    def range(self) -> list:  # noqa: ANN201
        return ([Feedback.created_at >= self.since] if self.since else []) + (
            [Feedback.created_at < self.until] if self.until else [])


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
    id: str
    created_at: datetime
    occurred_at: datetime | None
    source: str
    category: str
    text: str | None
    status: str
    causes: list[str]
    priority: int
    device_id: str | None
    request_id: str | None
    label_task_id: str | None
    fixed_in_model_version: str | None
    slice: dict[str, str | None]
    utterances: list[UtteranceView]


@dataclass(frozen=True)
class Inbox:
    filter: InboxFilter
    total: int  # complaints matching the filter
    offset: int
    items: list[InboxItem]
    facets: dict[str, dict[str, int]]  # status / cause / category / source / <slice key> -> value -> count


def inbox(session: Session, flt: InboxFilter = InboxFilter(), *, limit: int = 50, offset: int = 0) -> Inbox:
    """One page of complaints matching ``flt`` (highest priority first, newest first within), with their
    utterances, and counts over the whole inbox for the filter menus."""
    if not 1 <= limit <= MAX_PAGE:
        raise DashboardError("invalid", f"limit must be 1-{MAX_PAGE}, got {limit}")
    if offset < 0:
        raise DashboardError("invalid", f"offset must be 0 or more, got {offset}")
    where = flt.conditions()
    total = session.scalar(select(func.count()).select_from(Feedback).where(*where)) or 0
    rows = list(session.scalars(select(Feedback).where(*where)
                                .order_by(Feedback.priority.desc(), Feedback.created_at.desc(), Feedback.id)
                                .limit(limit).offset(offset)))
    utterances = _utterances(session, rows)
    items = [InboxItem(fb.id, aware(fb.created_at), aware(fb.occurred_at) if fb.occurred_at else None, fb.source,
                       fb.category, fb.text, fb.status, list(fb.causes or []), fb.priority, fb.device_id,
                       fb.request_id, fb.label_task_id, fb.fixed_in_model_version,
                       {k: getattr(fb, k) for k in SLICE_KEYS}, utterances.get(fb.id, []))
             for fb in rows]
    return Inbox(flt, total, offset, items, facets(session, flt.range()))


def facets(session: Session, where: list | None = None) -> dict[str, dict[str, int]]:
    """Counts of complaints (all, or those matching ``where``) per status, cause, category, source and slice
    value: one GROUP BY each. The menus of the inbox count the whole inbox, whatever is selected."""
    where = where or []
    out: dict[str, dict[str, int]] = {}
    for name in ("status", "category", "source", *SLICE_KEYS):
        column = getattr(Feedback, name)
        out[name] = {(v if v is not None else UNKNOWN): n for v, n in session.execute(
            select(column, func.count()).where(*where).group_by(column).order_by(column))}
    causes: dict[str, int] = {}
    text = cast(Feedback.causes, Text)
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
    recordings = {u.recording_id for u in utts.values() if u.recording_id}
    listenable = set(session.scalars(select(Recording.id).where(Recording.id.in_(recordings),
                                                                human_review_allowed()))) if recordings else set()
    references = _references(session, listenable)  # people see transcripts only where they may listen
    out: dict[str, list[UtteranceView]] = {}
    for fid, rid in links:
        u = utts.get(rid)
        if u is None:
            continue
        ref, ref_status = references.get(u.recording_id, (None, None)) if u.recording_id else (None, None)
        diff, cer = [], None
        if ref is not None and u.hypothesis is not None:
            diff = char_diff(ref, u.hypothesis)
            cer = round(edit_distance(ref, u.hypothesis) / max(len(ref), 1), 4)
        out.setdefault(fid, []).append(UtteranceView(
            u.request_id, aware(u.created_at), u.model_version, u.hypothesis, u.confidence, u.snr_db, u.duration_s,
            u.ended_by, u.in_grammar, u.recording_id, u.recording_id in listenable, ref, ref_status, diff, cer))
    for views in out.values():
        views.sort(key=lambda v: (v.created_at, v.request_id))
    return out


def _references(session: Session, recording_ids: set[str]) -> dict[str, tuple[str, str]]:
    """recording id → (transcript, status): the latest reviewed label, else the latest submitted one."""
    if not recording_ids:
        return {}
    stmt = (select(Label.recording_id, Label.text, Label.status)
            .where(Label.recording_id.in_(recording_ids), Label.status.in_(("reviewed", "submitted")),
                   Label.text.is_not(None))
            .order_by(Label.recording_id, Label.submitted_at, Label.reviewed_at))
    out: dict[str, tuple[str, str]] = {}
    for rid, text, status in session.execute(stmt):
        if rid not in out or status == "reviewed" or out[rid][1] != "reviewed":
            out[rid] = (text, status)
    return out
