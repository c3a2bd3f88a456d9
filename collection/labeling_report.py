"""Labeler reports: throughput, review outcome and agreement per person who labels."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from .models import Label, LabelTask, User


@dataclass(frozen=True)
class LabelerStats:
    """One labeler's work. ``median_seconds``: median seconds per timed task; ``tasks_per_hour``: timed
    tasks over their total time; ``mean_agreement_cer``: mean CER against the other round over the
    ``double_labelled`` items whose pair is complete (None when there are none)."""

    user_id: str
    username: str
    role: str
    simulated: bool
    submitted: int  # every label they made, whatever happened to it since
    reviewed: int  # accepted (by a reviewer or by agreement)
    rejected: int
    pending: int  # still waiting for review or for the other round
    open_tasks: int
    median_seconds: float | None
    tasks_per_hour: float | None
    mean_agreement_cer: float | None
    double_labelled: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labeler_report(session: Session) -> list[LabelerStats]:
    """Per labeler (everyone with a label, an open task or the labeler role): throughput and agreement."""
    labels_by: dict[str, list[Label]] = defaultdict(list)
    for label in session.scalars(select(Label).where(Label.labeler_id.is_not(None))):
        labels_by[label.labeler_id].append(label)
    open_by = dict(session.execute(select(LabelTask.assignee_id, func.count()).where(
        LabelTask.status == "open", LabelTask.assignee_id.is_not(None)).group_by(LabelTask.assignee_id)).all())
    involved = sorted(set(labels_by) | set(open_by))
    users = session.scalars(select(User).where(or_(User.role == "labeler", User.id.in_(involved)))
                            .order_by(User.username)).all()
    out = []
    for user in users:
        mine = labels_by.get(user.id, [])
        times = [lbl.seconds_spent for lbl in mine if lbl.seconds_spent is not None]
        agreements = [lbl.agreement for lbl in mine if lbl.agreement is not None]
        out.append(LabelerStats(
            user_id=user.id, username=user.username, role=user.role, simulated=user.simulated,
            submitted=len(mine), reviewed=sum(lbl.status == "reviewed" for lbl in mine),
            rejected=sum(lbl.status == "rejected" for lbl in mine),
            pending=sum(lbl.status == "submitted" for lbl in mine), open_tasks=int(open_by.get(user.id, 0)),
            median_seconds=statistics.median(times) if times else None,
            tasks_per_hour=3600 * len(times) / sum(times) if times and sum(times) > 0 else None,
            mean_agreement_cer=statistics.fmean(agreements) if agreements else None,
            double_labelled=len(agreements)))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def labeler_table(stats: list[LabelerStats]) -> Table:
    """The report as a rich table (one row per labeler; ``*`` marks simulated ones)."""
    table = Table(title="labelers", caption="sub: labels written; acc/rej/wait: accepted, rejected, waiting; "
                                            "med s: median seconds per task; agr: mean CER against the other "
                                            "round over the double-transcribed pairs; * simulated labeler")
    for col in ("labeler", "sub", "acc", "rej", "wait", "open", "med s", "/hour", "agr", "pairs"):
        table.add_column(col, justify="left" if col == "labeler" else "right", no_wrap=True)
    for s in stats:
        table.add_row(s.username + ("*" if s.simulated else ""), str(s.submitted), str(s.reviewed),
                      str(s.rejected), str(s.pending), str(s.open_tasks), _fmt(s.median_seconds, ".1f"),
                      _fmt(s.tasks_per_hour, ".0f"), _fmt(s.mean_agreement_cer, ".3f"), str(s.double_labelled))
    return table
