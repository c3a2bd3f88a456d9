"""Labeling workbench: the task queue, model pre-labels, double transcription, review and labeler reports.

The flow (docs/labeling.md has the why):

1. :func:`create_tasks` queues one round-1 :class:`~collection.models.LabelTask` per recording that people
   may listen to (consent ``scope_human_review``), plus a round-2 task for a deterministic share of them
   (double transcription). Priority by reason: VOC 100 > low confidence 50 > re-collection 20 > new 0.
2. :func:`prelabel` fills the champion model's transcript and confidence in; low-confidence audio moves up.
   Round 2 is blind: it gets the confidence but not the text, so the pair measures people, not the model.
3. :func:`assign` deals tasks out round-robin (never both rounds of a recording to one person);
   :func:`next_task` also lets a labeler pull unassigned work.
4. :func:`submit` stores exactly one :class:`~collection.models.Label` per task, even when two sessions
   submit at once. When both rounds are in, their agreement (CER between the transcripts) is stored and
   an agreeing pair is accepted without a reviewer; everything else waits in :func:`review_queue`.
5. :func:`review` accepts (optionally correcting) or rejects; :func:`reviewed_transcripts` is what dataset
   versions are built from. :func:`labeler_report` gives throughput and agreement per labeler.

:func:`simulate_labeler` answers tasks from the recording's known prompt text with a configurable
character error rate; its user is ``User.simulated`` and its labels carry a ``simulated …`` review note.

Functions take the caller's session and never commit: the caller owns the transaction
(:func:`collection.db.session_scope`). Errors are :class:`LabelingError` with a ``code`` routes map to
HTTP statuses.
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value

from asr.text import LanguagePack, get_language_pack

from .agreement import agreement_cer, corrupt, edit_distance
from .db import in_chunks
from .labeling_report import LabelerStats, labeler_report, labeler_table
from .models import (
    LABEL_FLAGS,
    TASK_STATUSES,
    Consent,
    Label,
    LabelTask,
    ProductionUtterance,
    Recording,
    Speaker,
    User,
    new_id,
    utcnow,
)
from .store import AudioStore, stable_fraction

__all__ = [
    "DOUBLE_ROUNDS", "LOW_CONFIDENCE", "REASON_PRIORITY", "REVIEWER_ROLES", "UNUSABLE_FLAGS", "LabelerStats",
    "LabelingError", "agreement_cer", "assign", "cancel_tasks_without_consent", "corrupt", "create_tasks",
    "edit_distance", "get_task", "guidelines", "human_review_allowed", "is_double", "is_simulated",
    "labeler_report", "labeler_table", "may_listen", "next_task", "prelabel", "review", "review_queue",
    "reviewed_transcripts", "simulate_labeler", "simulate_reviewer", "submit", "tasks_for",
]  # fmt: skip

log = logging.getLogger(__name__)

#: default priority of a task by the reason it was queued (higher is labelled first).
# voc: a customer complained; drift: production audio of a slice with an open alert (curate_feedback);
# low_confidence: the model was unsure; recollect: studio speech for a weak slice; new: everything else.
REASON_PRIORITY: dict[str, int] = {"voc": 100, "drift": 70, "low_confidence": 50, "recollect": 20, "new": 0}
REVIEWER_ROLES = ("reviewer", "admin")
#: the two rounds of double transcription; later rounds are re-labels after a rejection.
DOUBLE_ROUNDS = (1, 2)
#: a reviewed label with one of these flags is not a transcript of the audio and never training data.
UNUSABLE_FLAGS = ("unintelligible", "wrong_language")
#: pre-label confidence (0..1) below which a new task is re-queued as ``low_confidence``.
LOW_CONFIDENCE = 0.6
GUIDELINES_DIR = Path(__file__).resolve().parent / "guidelines"
SIMULATED_NOTE = "simulated labeler"
SIMULATED_REVIEW_NOTE = "simulated reviewer"


class LabelingError(ValueError):
    """A labeling request that cannot be done; ``code`` says why (routes map it to 404/403/409/422)."""

    CODES = ("not_found", "forbidden", "conflict", "invalid")

    def __init__(self, code: str, message: str):
        if code not in self.CODES:
            raise ValueError(f"unknown LabelingError code {code!r}; valid: {list(self.CODES)}")
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------------
# Consent and small helpers
# --------------------------------------------------------------------------------------------------


def human_review_allowed() -> ColumnElement[bool]:
    """SQL condition on :class:`Recording`: people may listen to it.

    True when the speaker's consent is active and has ``scope_human_review``; for production audio, when
    the device's active consent has it; for a synthetic persona without any consent row, always (a
    synthetic voice is nobody's personal data). Everything else, including audio with no consent at
    all, is never shown to a person.
    """
    consent_ok = and_(Consent.scope_human_review.is_(True), Consent.revoked_at.is_(None))
    speaker_consented = (select(Speaker.id).join(Consent, Speaker.consent_id == Consent.id)
                         .where(Speaker.id == Recording.speaker_id, consent_ok).exists())
    synthetic = (select(Speaker.id).where(Speaker.id == Recording.speaker_id, Speaker.persona == "synthetic",
                                          Speaker.consent_id.is_(None)).exists())
    device_consented = (select(ProductionUtterance.request_id)
                        .join(Consent, and_(Consent.subject_type == "device",
                                            Consent.subject_id == ProductionUtterance.device_id))
                        .where(ProductionUtterance.recording_id == Recording.id, consent_ok).exists())
    return or_(speaker_consented, synthetic, device_consented)


def may_listen(session: Session, recording_id: str) -> bool:
    """Whether people may listen to the recording (its consent allows human review)."""
    return session.scalar(select(Recording.id).where(Recording.id == recording_id, human_review_allowed())) is not None


def _queue_order() -> tuple[Any, ...]:
    # a recording's rounds stay together: assign() then deals each pair to the two least loaded people
    return LabelTask.priority.desc(), LabelTask.created_at, LabelTask.recording_id, LabelTask.round, LabelTask.id


def _note(*parts: str | None) -> str | None:
    """Review notes accumulate (``simulated …; agreement``) instead of overwriting each other."""
    kept = [p for p in parts if p]
    return "; ".join(kept) if kept else None


def _pack(recording: Recording) -> LanguagePack:
    try:
        return get_language_pack(recording.language)
    except ValueError as e:
        raise LabelingError("invalid", f"recording {recording.id}: {e}") from e


def _lock_recording(session: Session, recording_id: str) -> None:
    """Serialise writers of one recording's labels until commit (PostgreSQL row lock; SQLite has a single
    writer anyway). NO KEY UPDATE: compatible with the key-share locks that inserting a label takes."""
    session.execute(select(Recording.id).where(Recording.id == recording_id).with_for_update(key_share=True))


def _claim(session: Session, task: LabelTask, user: User) -> bool:
    """Give an unassigned open task to ``user``; False when another session took it first."""
    res = session.execute(
        update(LabelTask).where(LabelTask.id == task.id, LabelTask.assignee_id.is_(None), LabelTask.status == "open")
        .values(assignee_id=user.id).execution_options(synchronize_session=False))
    if res.rowcount != 1:
        return False
    set_committed_value(task, "assignee_id", user.id)
    return True


def is_double(recording_id: str, share: float, seed: int = 0) -> bool:
    """Whether ``recording_id`` is among the ``share`` (0..1) transcribed twice: a hash of id and seed,
    so the choice is the same on every run and independent of the order recordings arrive in."""
    return stable_fraction(seed, recording_id) < share


def _insert_tasks(session: Session, rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT (recording_id, round) DO NOTHING: a concurrent run's task wins quietly."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # no portable upsert: the unique constraint still refuses duplicates
        session.add_all(LabelTask(**row) for row in rows)
        session.flush()
        return
    for start in range(0, len(rows), 500):
        stmt = insert(LabelTask).values(rows[start:start + 500])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["recording_id", "round"]))


# --------------------------------------------------------------------------------------------------
# Queue: create, pre-label, assign
# --------------------------------------------------------------------------------------------------


def create_tasks(
    session: Session,
    recording_ids: list[str] | None = None,
    *,
    reason: str = "new",
    priority: int | None = None,
    double_share: float = 0.2,
    seed: int = 0,
    feedback_id: str | None = None,
) -> list[LabelTask]:
    """Queue recordings for labeling; returns the tasks created or moved up.

    Every recording in ``recording_ids`` (None: every recording in the catalog) that has no round-1
    task yet gets one, and a round-2 task too when :func:`is_double` picks it (``double_share`` in
    0..1, ``seed``). Re-running adds nothing. An already queued, still open task of a listed recording
    moves up to ``reason``/``priority`` when that ranks higher (a VOC arriving for audio queued as new).
    Recordings people may not listen to (:func:`human_review_allowed`) are skipped.
    """
    if reason not in REASON_PRIORITY:
        raise LabelingError("invalid", f"unknown task reason {reason!r}; valid: {list(REASON_PRIORITY)}")
    if not 0.0 <= double_share <= 1.0:
        raise LabelingError("invalid", f"double_share must be between 0 and 1, got {double_share}")
    prio = REASON_PRIORITY[reason] if priority is None else int(priority)
    query = select(Recording.id).where(human_review_allowed())
    ids: list[str] = []
    if recording_ids is not None:
        ids = list(dict.fromkeys(recording_ids))
        known = set(session.scalars(select(Recording.id).where(Recording.id.in_(ids))))
        if missing := [i for i in ids if i not in known]:
            raise LabelingError("not_found", f"{len(missing)} unknown recording id(s), e.g. {missing[:3]}")
        query = query.where(Recording.id.in_(ids))
    allowed = set(session.scalars(query))
    if recording_ids is not None and len(allowed) < len(ids):
        log.info("%d recording(s) not queued: consent does not allow human review", len(ids) - len(allowed))

    touched: list[LabelTask] = []
    if ids:
        for task in session.scalars(select(LabelTask).where(LabelTask.recording_id.in_(sorted(allowed)),
                                                            LabelTask.status == "open", LabelTask.priority < prio)):
            task.priority, task.reason = prio, reason
            task.feedback_id = feedback_id or task.feedback_id
            touched.append(task)

    has_round1 = select(LabelTask.id).where(LabelTask.recording_id == Recording.id, LabelTask.round == 1).exists()
    fresh = session.scalars(query.where(~has_round1).order_by(Recording.created_at, Recording.id)).all()
    now = utcnow()
    rows = []
    for rid in fresh:
        for rnd in (1, 2) if is_double(rid, double_share, seed) else (1,):
            rows.append({"id": new_id("tsk"), "recording_id": rid, "round": rnd, "priority": prio, "reason": reason,
                         "status": "open", "feedback_id": feedback_id, "created_at": now})
    _insert_tasks(session, rows)
    # The fresh recordings had no task before, so their tasks are exactly the created ones; chunks of
    # sorted ids keep the queue order (same priority and time: recording id leads) across chunks.
    created = [task for chunk in in_chunks(fresh) for task in session.scalars(
        select(LabelTask).where(LabelTask.recording_id.in_(chunk)).order_by(*_queue_order()))]
    log.info("label tasks: %d created for %d recording(s), %d moved up", len(created), len(fresh), len(touched))
    return [*touched, *created]


def cancel_tasks_without_consent(session: Session) -> int:
    """Cancel open tasks whose recording people may no longer listen to (consent revoked or narrowed)."""
    blocked = select(Recording.id).where(~human_review_allowed())
    res = session.execute(update(LabelTask).where(LabelTask.status == "open", LabelTask.recording_id.in_(blocked))
                          .values(status="cancelled").execution_options(synchronize_session=False))
    return int(res.rowcount or 0)


def prelabel(
    session: Session,
    store: AudioStore,
    recognizer: Any,
    tasks: Iterable[LabelTask] | None = None,
    *,
    model_version: str,
    threshold: float = LOW_CONFIDENCE,
    batch_size: int = 8,
) -> int:
    """Fill ``prelabel`` / ``prelabel_model`` / ``prelabel_confidence`` from ``recognizer``
    (:class:`asr.Recognizer`) on the stored audio; returns the number of tasks updated.

    ``tasks`` None: every open task not yet pre-labelled by ``model_version`` (re-runs skip done work).
    Round-2 tasks get model and confidence but no text, so the second transcription stays blind.
    A task whose confidence (0..1) is below ``threshold`` moves up to at least the ``low_confidence``
    priority; a ``new`` one is re-labelled ``low_confidence``. Recordings in another language than the
    model's and audio that cannot be read are skipped with a warning.
    """
    from asr.audio import AudioError, load_audio

    if tasks is None:
        tasks = session.scalars(select(LabelTask).where(
            LabelTask.status == "open",
            or_(LabelTask.prelabel_model.is_(None), LabelTask.prelabel_model != model_version))
            .order_by(*_queue_order())).all()
    by_recording: dict[str, list[LabelTask]] = defaultdict(list)
    for task in tasks:
        by_recording[task.recording_id].append(task)
    language = recognizer.loaded.language
    pack = get_language_pack(language)
    recordings = [session.get(Recording, rid) for rid in by_recording]
    todo = []
    for rec in recordings:
        if rec is None:
            continue
        if rec.language != language:
            log.warning("prelabel: %s is %r audio; model %s is %r: skipped", rec.id, rec.language, model_version,
                        language)
            continue
        todo.append(rec)
    updated = 0
    for start in range(0, len(todo), batch_size):
        batch, wavs = [], []
        for rec in todo[start:start + batch_size]:
            try:
                wavs.append(load_audio(store.get(rec.uri)))
                batch.append(rec)
            except (AudioError, OSError) as e:
                log.warning("prelabel: cannot read the audio of %s (%s): skipped", rec.id, e)
        for rec, hyp in zip(batch, recognizer.transcribe_batch(wavs) if wavs else [], strict=True):
            text, confidence = pack.normalize(hyp.text), float(hyp.confidence)
            for task in by_recording[rec.id]:
                task.prelabel = text if task.round == 1 else None
                task.prelabel_model, task.prelabel_confidence = model_version, confidence
                if confidence < threshold:
                    task.priority = max(task.priority, REASON_PRIORITY["low_confidence"])
                    if task.reason == "new":
                        task.reason = "low_confidence"
                updated += 1
    session.flush()
    log.info("prelabel: %d task(s) pre-labelled by %s", updated, model_version)
    return updated


def assign(session: Session, labelers: list[User], *, per_labeler: int | None = None) -> int:
    """Deal unassigned open tasks to ``labelers`` round-robin, highest priority first; returns how many.

    Nobody gets two tasks of the same recording (both rounds of a double transcription must be
    independent), so with a single labeler round-2 tasks stay unassigned. ``per_labeler`` caps the open
    tasks each one holds, counting those already held, so re-running tops up instead of piling on.
    """
    if not labelers:
        raise LabelingError("invalid", "assign needs at least one labeler")
    if inactive := [u.username for u in labelers if not u.active]:
        raise LabelingError("invalid", f"inactive user(s) cannot be assigned tasks: {inactive}")
    if per_labeler is not None and per_labeler < 0:
        raise LabelingError("invalid", f"per_labeler must be >= 0, got {per_labeler}")
    people = list({u.id: u for u in labelers}.values())
    held = dict.fromkeys((u.id for u in people), 0)
    for uid, n in session.execute(select(LabelTask.assignee_id, func.count()).where(
            LabelTask.status == "open", LabelTask.assignee_id.in_(list(held))).group_by(LabelTask.assignee_id)):
        held[uid] = n
    tasks = session.scalars(select(LabelTask).join(Recording).where(
        LabelTask.status == "open", LabelTask.assignee_id.is_(None), human_review_allowed())
        .order_by(*_queue_order())).all()
    holders: dict[str, set[str]] = defaultdict(set)
    for chunk in in_chunks(t.recording_id for t in tasks):
        for rid, uid in session.execute(select(LabelTask.recording_id, LabelTask.assignee_id).where(
                LabelTask.assignee_id.is_not(None), LabelTask.recording_id.in_(chunk))):
            holders[rid].add(uid)
    turn = given = 0
    for task in tasks:
        if per_labeler is not None and all(n >= per_labeler for n in held.values()):
            break
        # round-robin among those who may take it, least loaded first, so skips do not unbalance the deal
        eligible = []
        for k in range(len(people)):
            user = people[(turn + k) % len(people)]
            if (per_labeler is None or held[user.id] < per_labeler) and user.id not in holders[task.recording_id]:
                eligible.append((held[user.id], k, user))
        if not eligible:
            continue
        _, k, user = min(eligible, key=lambda e: e[:2])
        if _claim(session, task, user):
            held[user.id] += 1
            holders[task.recording_id].add(user.id)
            given += 1
            turn = (turn + k + 1) % len(people)
    log.info("assigned %d task(s) to %d labeler(s)", given, len(people))
    return given


# --------------------------------------------------------------------------------------------------
# Labeling
# --------------------------------------------------------------------------------------------------


def tasks_for(session: Session, user: User, *, status: str | None = "open", limit: int | None = 50) -> list[LabelTask]:
    """``user``'s own tasks with ``status`` (None: any), highest priority first, then oldest.
    Open tasks of audio people may no longer listen to are left out."""
    if status is not None and status not in TASK_STATUSES:
        raise LabelingError("invalid", f"unknown task status {status!r}; valid: {list(TASK_STATUSES)}")
    query = select(LabelTask).join(Recording).where(LabelTask.assignee_id == user.id)
    if status is not None:
        query = query.where(LabelTask.status == status)
    if status == "open":
        query = query.where(human_review_allowed())
    return list(session.scalars(query.order_by(*_queue_order()).limit(limit)))


def next_task(session: Session, user: User, *, claim: bool = True) -> LabelTask | None:
    """The task ``user`` should do next: their own highest-priority open task; with none and ``claim``,
    the highest-priority unassigned one they may take (never a second round of audio they hold)."""
    own = tasks_for(session, user, limit=1)
    if own or not claim or not user.active:
        return own[0] if own else None
    held = aliased(LabelTask)
    holds_recording = select(held.id).where(held.recording_id == LabelTask.recording_id,
                                            held.assignee_id == user.id).exists()
    candidates = session.scalars(select(LabelTask).join(Recording).where(
        LabelTask.status == "open", LabelTask.assignee_id.is_(None), human_review_allowed(), ~holds_recording)
        .order_by(*_queue_order()).limit(20)).all()
    return next((task for task in candidates if _claim(session, task, user)), None)


def get_task(session: Session, task_id: str, user: User) -> LabelTask:
    """The task, if ``user`` may see it: its assignee, or a reviewer/admin."""
    task = session.get(LabelTask, task_id)
    if task is None:
        raise LabelingError("not_found", f"no label task {task_id!r}")
    if task.assignee_id != user.id and user.role not in REVIEWER_ROLES:
        raise LabelingError("forbidden", f"task {task_id} is not assigned to {user.username!r}")
    if not may_listen(session, task.recording_id):
        raise LabelingError("forbidden", f"the consent for recording {task.recording_id} no longer allows "
                                         "human review")
    return task


def _check_flags(flags: Iterable[str]) -> list[str]:
    flags = sorted(set(flags))
    if unknown := [f for f in flags if f not in LABEL_FLAGS]:
        raise LabelingError("invalid", f"unknown flag(s) {unknown}; valid: {list(LABEL_FLAGS)}")
    return flags


def submit(
    session: Session,
    task_id: str,
    user: User,
    text: str,
    *,
    flags: Iterable[str] = (),
    seconds_spent: float | None = None,
    agreement_threshold: float = 0.0,
) -> Label:
    """Store ``user``'s transcript of their task; returns the new :class:`Label`.

    ``text`` is normalised with the recording's language pack; it may be empty only with a flag
    (``flags`` ⊆ ``models.LABEL_FLAGS``). ``seconds_spent``: time on the task in seconds. A task is
    submitted once: a repeated or concurrent submit raises ``LabelingError("conflict")`` and adds
    nothing. When this completes a double transcription, both labels get ``agreement`` (CER, see
    :func:`agreement_cer`); with CER <= ``agreement_threshold`` and the same flags both are accepted
    (status ``reviewed``, note ``agreement``); otherwise, and for single transcriptions, the label waits
    for a reviewer.
    """
    return _submit(session, task_id, user, text, flags=flags, seconds_spent=seconds_spent,
                   agreement_threshold=agreement_threshold)


def _submit(session: Session, task_id: str, user: User, text: str, *, flags: Iterable[str],
            seconds_spent: float | None, agreement_threshold: float, note: str | None = None) -> Label:
    task = session.get(LabelTask, task_id)
    if task is None:
        raise LabelingError("not_found", f"no label task {task_id!r}")
    if task.assignee_id != user.id:
        raise LabelingError("forbidden", f"task {task_id} is not assigned to {user.username!r}")
    flags = _check_flags(flags)
    if seconds_spent is not None and not (math.isfinite(seconds_spent) and seconds_spent >= 0):
        raise LabelingError("invalid", f"seconds_spent must be a non-negative number, got {seconds_spent}")
    pack = _pack(task.recording)
    normalized = pack.normalize(text or "")
    if not normalized and not flags:
        raise LabelingError("invalid", "the transcript is empty; type what is said, or set a flag "
                                       f"({', '.join(LABEL_FLAGS)}) when nothing can be transcribed")
    # Submissions of the same recording take turns, so the second of a pair sees the first and computes
    # the agreement.
    _lock_recording(session, task.recording_id)
    # The conditional UPDATE is the gate: of two concurrent submits exactly one changes the row.
    res = session.execute(
        update(LabelTask).where(LabelTask.id == task.id, LabelTask.status == "open", LabelTask.assignee_id == user.id)
        .values(status="submitted").execution_options(synchronize_session=False))
    if res.rowcount != 1:
        raise LabelingError("conflict", f"task {task_id} is no longer open: it was already submitted or cancelled")
    set_committed_value(task, "status", "submitted")
    label = Label(task_id=task.id, recording_id=task.recording_id, round=task.round, labeler_id=user.id,
                  text=normalized, prelabel=task.prelabel, flags=flags, status="submitted",
                  seconds_spent=seconds_spent, submitted_at=utcnow(), review_note=note)
    session.add(label)
    try:
        session.flush()
    except IntegrityError as e:  # labels.task_id is unique: the last line of defence
        raise LabelingError("conflict", f"task {task_id} already has a label") from e
    if task.round in DOUBLE_ROUNDS:
        _settle_pair(session, task.recording_id, task.recording.language, agreement_threshold)
    return label


def _settle_pair(session: Session, recording_id: str, language: str, threshold: float) -> None:
    pair = session.scalars(select(Label).where(Label.recording_id == recording_id, Label.round.in_(DOUBLE_ROUNDS))
                           .order_by(Label.round)).all()
    if len(pair) != 2:
        return
    a, b = pair
    cer = agreement_cer(a.text or "", b.text or "", language)
    a.agreement = b.agreement = cer
    if a.status == b.status == "submitted" and cer <= threshold and set(a.flags) == set(b.flags):
        now = utcnow()
        for label in pair:
            label.status, label.reviewed_at = "reviewed", now
            label.review_note = _note(label.review_note, "agreement")
    session.flush()


# --------------------------------------------------------------------------------------------------
# Review
# --------------------------------------------------------------------------------------------------


def review_queue(session: Session, *, limit: int | None = 50) -> list[Label]:
    """Labels waiting for a reviewer: submitted, not auto-accepted, and (for a double transcription)
    with the other round in too. Highest task priority first, then oldest; the two labels of a
    disagreeing pair come one after the other. Audio people may no longer listen to is left out."""
    partner = aliased(LabelTask)
    partner_open = select(partner.id).where(
        partner.recording_id == Label.recording_id, partner.id != Label.task_id,
        partner.round.in_(DOUBLE_ROUNDS), partner.status == "open").exists()
    rows = session.execute(
        select(Label, LabelTask.priority).join(LabelTask, Label.task_id == LabelTask.id)
        .join(Recording, Label.recording_id == Recording.id)
        .where(Label.status == "submitted", human_review_allowed(),
               or_(Label.round.not_in(DOUBLE_ROUNDS), ~partner_open))).all()
    first_seen: dict[str, tuple[int, Any]] = {}
    for label, prio in rows:
        key = (-prio, label.submitted_at)
        first_seen[label.recording_id] = min(first_seen.get(label.recording_id, key), key)
    rows.sort(key=lambda r: (*first_seen[r[0].recording_id], r[0].recording_id, r[0].round))
    labels = [label for label, _ in rows]
    return labels[:limit] if limit is not None else labels


def review(
    session: Session,
    label_id: str,
    reviewer: User,
    *,
    accept: bool,
    text: str | None = None,
    note: str | None = None,
) -> Label:
    """Accept (status ``reviewed``) or reject a submitted label; reviewers and admins only, never their own.

    ``text`` (accept only) corrects the transcript; the labeler's original is kept in the review note.
    Accepting one label of a recording rejects its other labels (one accepted transcript per
    recording). Rejecting the last usable label re-queues the recording as a new, unassigned task.
    """
    if reviewer.role not in REVIEWER_ROLES:
        raise LabelingError("forbidden", f"{reviewer.username!r} is a {reviewer.role}; reviewing needs one of "
                                         f"{list(REVIEWER_ROLES)}")
    label = session.get(Label, label_id)
    if label is None:
        raise LabelingError("not_found", f"no label {label_id!r}")
    if label.labeler_id == reviewer.id:
        raise LabelingError("forbidden", "nobody reviews their own label")
    if text is not None and not accept:
        raise LabelingError("invalid", "a corrected text only goes with accept=True")
    corrected = None
    if text is not None:
        corrected = _pack(label.recording).normalize(text)
        if not corrected and not label.flags:
            raise LabelingError("invalid", "the corrected transcript is empty")
    status = "reviewed" if accept else "rejected"
    # Reviews of one recording take turns: two reviewers accepting both labels of a pair at once would
    # otherwise each reject the other's label (a deadlock on PostgreSQL, two winners on SQLite).
    _lock_recording(session, label.recording_id)
    res = session.execute(update(Label).where(Label.id == label.id, Label.status == "submitted")
                          .values(status=status).execution_options(synchronize_session=False))
    if res.rowcount != 1:
        session.refresh(label)
        raise LabelingError("conflict", f"label {label_id} is {label.status}, not waiting for review")
    set_committed_value(label, "status", status)
    now = utcnow()
    label.reviewer_id, label.reviewed_at = reviewer.id, now
    changed = corrected is not None and corrected != label.text
    label.review_note = _note(label.review_note, note, f"corrected; labeler wrote: {label.text}" if changed else None)
    if changed:
        label.text = corrected
    others = session.scalars(select(Label).where(Label.recording_id == label.recording_id, Label.id != label.id,
                                                 Label.status.in_(("submitted", "reviewed")))).all()
    if accept:
        for other in others:
            other.status, other.reviewer_id, other.reviewed_at = "rejected", reviewer.id, now
            other.review_note = _note(other.review_note, f"superseded by {label.id}")
    elif not others:
        _requeue(session, label)
    session.flush()
    return label


def _requeue(session: Session, rejected: Label) -> None:
    """After a rejection leaves a recording with no usable label: one more round, unassigned."""
    rid = rejected.recording_id
    if session.scalar(select(LabelTask.id).where(LabelTask.recording_id == rid, LabelTask.status == "open")):
        return  # the other round is still being transcribed
    if not may_listen(session, rid):
        return
    last = session.scalar(select(func.max(LabelTask.round)).where(LabelTask.recording_id == rid)) or 0
    source = session.get(LabelTask, rejected.task_id)
    # re-labels start at round 3 so they are never mistaken for the second half of a double transcription
    _insert_tasks(session, [{"id": new_id("tsk"), "recording_id": rid, "round": max(last + 1, 3),
                             "priority": source.priority, "reason": source.reason, "status": "open",
                             "feedback_id": source.feedback_id, "created_at": utcnow()}])


def reviewed_transcripts(session: Session, *, include_simulated: bool = True) -> dict[str, str]:
    """``{recording_id: text}``: the one accepted transcript per recording (an agreeing pair: round 1's).

    Labels flagged ``unintelligible`` or ``wrong_language`` and empty ones are left out: they say
    the audio has no usable transcript. ``include_simulated`` False drops the simulated labeler's work.
    """
    query = (select(Label).join(User, Label.labeler_id == User.id, isouter=True)
             .where(Label.status == "reviewed").order_by(Label.recording_id, Label.round))
    if not include_simulated:
        query = query.where(or_(User.simulated.is_(False), User.id.is_(None)))
    out: dict[str, str] = {}
    decided: set[str] = set()
    for label in session.scalars(query):
        if label.recording_id in decided:
            continue
        decided.add(label.recording_id)
        if label.text and not set(label.flags) & set(UNUSABLE_FLAGS):
            out[label.recording_id] = label.text
    return out


# --------------------------------------------------------------------------------------------------
# Simulated labeler and guidelines
# --------------------------------------------------------------------------------------------------


def simulate_labeler(
    session: Session,
    user: User,
    *,
    error_rate: float = 0.05,
    seed: int = 0,
    limit: int | None = None,
    heard: Mapping[str, str] | None = None,
) -> int:
    """Answer ``user``'s open tasks from ``Recording.prompt_text`` with about ``error_rate`` character
    errors (:func:`corrupt`); returns how many were submitted.

    For demos and tests only: ``user`` must have ``simulated=True``, and every label it makes carries
    the review note ``simulated labeler (error_rate=…, seed=…)``. The errors depend on ``seed``, the
    user name and the audio's sha256, so the same catalog content gives the same answers.
    ``seconds_spent`` is simulated too (listening twice plus typing). ``heard``: recording id → what was
    said, for recordings without a prompt text (production audio: the device simulator knows what its
    speakers said); recordings with neither are skipped.
    """
    if not user.simulated:
        raise LabelingError("invalid", f"user {user.username!r} is not a simulated labeler (User.simulated is "
                                       "False); create one with `voiceloop label users add NAME --simulated`")
    if not 0.0 <= error_rate <= 1.0:
        raise LabelingError("invalid", f"error_rate must be between 0 and 1, got {error_rate}")
    tasks = tasks_for(session, user, limit=limit)
    said = {t.recording.id: t.recording.prompt_text or (heard or {}).get(t.recording.id) for t in tasks}
    alphabet = sorted({c for text in said.values() for c in (text or "") if not c.isspace()})
    note = f"{SIMULATED_NOTE} (error_rate={error_rate:g}, seed={seed})"
    done = unheard = 0
    for task in tasks:
        rec = task.recording
        truth = said[rec.id]
        if not truth:  # production audio the simulation has not told us the words of (yet)
            unheard += 1
            continue
        rng = random.Random(f"{seed}|{user.username}|{rec.sha256}|{task.round}")
        text = corrupt(truth, error_rate, rng, alphabet)
        if not _pack(rec).normalize(text):
            text = truth  # every character deleted: a person would have typed something
        seconds = round(2 * rec.duration + 0.4 * len(text) * (0.75 + rng.random() / 2) + 3, 1)
        _submit(session, task.id, user, text, flags=(), seconds_spent=seconds, agreement_threshold=0.0, note=note)
        done += 1
    log.info("simulated labeler %s submitted %d task(s)%s", user.username, done,
             f", skipped {unheard} with no known words" if unheard else "")
    return done


def simulate_reviewer(session: Session, reviewer: User, *, max_cer: float = 0.1, limit: int | None = None,
                      heard: Mapping[str, str] | None = None) -> int:
    """Review the queue the way a careful reviewer with the answer key would: accept a label whose CER
    against ``Recording.prompt_text`` (or ``heard[recording id]``, see :func:`simulate_labeler`) is at most
    ``max_cer`` (correcting it to that text), reject the rest (they are re-queued). Of a disagreeing pair,
    the closer label is taken. Returns how many labels were decided. Demos and tests only: ``reviewer``
    must be simulated; notes say so."""
    if not reviewer.simulated:
        raise LabelingError("invalid", f"user {reviewer.username!r} is not simulated (User.simulated is False)")
    decided = 0
    for label in review_queue(session, limit=limit):
        session.refresh(label)
        rec = label.recording
        truth = rec.prompt_text or (heard or {}).get(rec.id)
        if label.status != "submitted" or not truth or label.labeler_id == reviewer.id:
            continue  # settled by its pair's review meanwhile, or nothing to check it against
        cer = agreement_cer(label.text or "", truth, rec.language)
        pending = session.scalars(select(Label).where(Label.recording_id == rec.id, Label.status == "submitted",
                                                      Label.id != label.id)).all()
        closer = [p for p in pending if agreement_cer(p.text or "", truth, rec.language) < cer]
        if cer <= max_cer and not closer:
            review(session, label.id, reviewer, accept=True, text=truth,
                   note=f"{SIMULATED_REVIEW_NOTE} (CER {cer:.2f} vs prompt)")
            decided += 1
        elif not closer:
            review(session, label.id, reviewer, accept=False,
                   note=f"{SIMULATED_REVIEW_NOTE} (CER {cer:.2f} > {max_cer:g})")
            decided += 1
    return decided


def is_simulated(label: Label) -> bool:
    """Whether the simulated labeler wrote ``label`` (its review note says so)."""
    return bool(label.review_note and label.review_note.startswith(SIMULATED_NOTE))


def guidelines(language: str) -> str:
    """The transcription guideline for labelers of ``language`` (markdown), from collection/guidelines/."""
    available = sorted(p.stem for p in GUIDELINES_DIR.glob("*.md"))
    if language not in available:
        raise LabelingError("not_found", f"no labeling guideline for language {language!r}; available: "
                                         f"{', '.join(available) or 'none'} (add collection/guidelines/"
                                         f"{language}.md)")
    return (GUIDELINES_DIR / f"{language}.md").read_text(encoding="utf-8")
