"""What the labeling workbench's pages show, beyond :mod:`collection.labeling`'s queue operations:
who may listen to a recording, the review queue grouped by recording, and the admin overview.

Listening follows the same rule as the queue (:func:`collection.labeling.human_review_allowed`: the
consent must allow human review) plus the role: a labeler only hears audio of a task assigned to
them; reviewers and admins hear any audio people may listen to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .labeling import REVIEWER_ROLES, LabelerStats, LabelingError, labeler_report, may_listen, review_queue
from .models import Label, LabelTask, Recording, User
from .qc_report import QcReport, qc_report
from .users import list_users


def audio_for(session: Session, user: User, recording_id: str) -> Recording:
    """The recording, if ``user`` may listen to it.

    Raises:
        LabelingError: ``not_found`` (no such recording) or ``forbidden`` (a labeler without a task on it,
            or a consent that does not allow human review).
    """
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise LabelingError("not_found", f"no recording {recording_id!r}")
    if user.role not in REVIEWER_ROLES:
        mine = session.scalar(select(LabelTask.id).where(LabelTask.recording_id == recording_id,
                                                         LabelTask.assignee_id == user.id))
        if mine is None:
            raise LabelingError("forbidden", f"recording {recording_id} is not in a task assigned to "
                                             f"{user.username!r}")
    if not may_listen(session, recording_id):
        raise LabelingError("forbidden", f"the consent for recording {recording_id} does not allow human review")
    return recording


@dataclass(frozen=True)
class ReviewItem:
    """One recording waiting for review with its labels (two for a disagreeing double transcription).
    ``agreement``: CER between the two rounds (None for a single transcription)."""

    recording: Recording
    labels: tuple[Label, ...]
    labelers: dict[str, str] = field(default_factory=dict)  # user id -> username

    @property
    def agreement(self) -> float | None:
        return next((lbl.agreement for lbl in self.labels if lbl.agreement is not None), None)


def review_items(session: Session, *, limit: int = 20) -> list[ReviewItem]:
    """The review queue (:func:`collection.labeling.review_queue`) grouped by recording, in queue order."""
    grouped: dict[str, list[Label]] = {}
    for label in review_queue(session, limit=None):
        if label.recording_id not in grouped and len(grouped) >= limit:
            break
        grouped.setdefault(label.recording_id, []).append(label)
    ids = {lbl.labeler_id for labels in grouped.values() for lbl in labels if lbl.labeler_id}
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all()) if ids else {}
    return [ReviewItem(labels[0].recording, tuple(labels), names) for labels in grouped.values()]


@dataclass(frozen=True)
class Overview:
    """The admin page: users, queue sizes, QC counts and the labeler report."""

    users: list[User]
    tasks: dict[str, int]  # open_unassigned, open_assigned, submitted, cancelled
    labels: dict[str, int]  # by label status
    awaiting_review: int
    qc: QcReport
    labelers: list[LabelerStats]


def overview(session: Session) -> Overview:
    tasks = {"open_unassigned": 0, "open_assigned": 0, "submitted": 0, "cancelled": 0}
    for status, assigned, n in session.execute(
            select(LabelTask.status, LabelTask.assignee_id.is_not(None), func.count())
            .group_by(LabelTask.status, LabelTask.assignee_id.is_not(None))):
        key = (f"open_{'assigned' if assigned else 'unassigned'}" if status == "open" else status)
        tasks[key] = tasks.get(key, 0) + int(n)
    labels = dict(session.execute(select(Label.status, func.count()).group_by(Label.status)).all())
    return Overview(users=list_users(session), tasks=tasks, labels={k: int(v) for k, v in labels.items()},
                    awaiting_review=len(review_queue(session, limit=None)), qc=qc_report(session),
                    labelers=labeler_report(session))
