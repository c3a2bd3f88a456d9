"""Quotas: how far the catalog is from a data plan, cell by cell, and what to collect next.

:func:`plan_status` counts, per plan cell, the accepted recordings whose speaker (age band,
gender, dialect) and environment fall in the cell (``collected``) and those of them with a
reviewed label (``labeled``). :func:`plan_gaps` turns the shortfall into a re-collection plan
(same schema, re-runnable); :func:`status_table` and :func:`plot_status` show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich import box
from rich.table import Table
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from collection.dataplan import AXES, MAX_NAME, Cell, DataPlan, DataPlanError
from collection.models import Consent, Label, Recording, Speaker
from collection.studio.environments import ENVIRONMENTS
from collection.studio.personas import AGE_BANDS, GENDERS

GAPS_SUFFIX = "-gaps"


@dataclass(frozen=True)
class CellStatus:
    """One cell's progress: ``collected`` accepted recordings, ``labeled`` of them with a reviewed label."""

    cell: Cell
    collected: int
    labeled: int

    @property
    def target(self) -> int:
        return self.cell.target

    @property
    def remaining(self) -> int:
        return max(self.cell.target - self.collected, 0)

    @property
    def fill(self) -> float:
        """collected / target, in [0, ∞) (over-collection shows above 1)."""
        return self.collected / self.cell.target if self.cell.target else 1.0


def _counts(session: Session, plan: DataPlan) -> dict[tuple[str, ...], tuple[int, int]]:
    """(age band, gender, dialect, environment) → (accepted recordings, those with a reviewed label)."""
    reviewed = select(Label.recording_id).where(Label.status == "reviewed").distinct().subquery()
    axes = (Speaker.age_band, Speaker.gender, Speaker.dialect, Recording.environment)
    stmt = (select(*axes, func.count(Recording.id), func.count(reviewed.c.recording_id))
            .join(Speaker, Recording.speaker_id == Speaker.id)
            .outerjoin(Consent, Speaker.consent_id == Consent.id)
            .outerjoin(reviewed, reviewed.c.recording_id == Recording.id)
            # A revoked consent takes the speaker's recordings out of every quota: they cannot be used.
            .where(Recording.language == plan.language, Consent.revoked_at.is_(None))
            .group_by(*axes))
    for column, axis in zip(axes, AXES, strict=True):
        stmt = stmt.where(column.in_(sorted({getattr(c, axis) for c in plan.cells})))
    if plan.quota_scope == "plan":
        stmt = stmt.where(or_(Recording.plan == plan.name,
                              Recording.plan.startswith(plan.name + GAPS_SUFFIX, autoescape=True)))
    return {tuple(row[:4]): (int(row[4]), int(row[5])) for row in session.execute(stmt)}


def plan_status(session: Session, plan: DataPlan) -> list[CellStatus]:
    """Progress of every cell of ``plan``, in plan order. Recordings count when their language is the
    plan's and their speaker's consent is not revoked; with ``quota_scope: plan`` only recordings
    collected under the plan's name (or its gap plans') count."""
    if not plan.cells:
        return []
    counts = _counts(session, plan)
    return [CellStatus(c, *counts.get(c.axes, (0, 0))) for c in plan.cells]


def gaps_name(name: str) -> str:
    out = name + GAPS_SUFFIX
    if len(out) > MAX_NAME:
        raise DataPlanError(f"re-collection plan name {out!r} is longer than {MAX_NAME} characters; "
                            "shorten the plan name")
    return out


def plan_gaps(session: Session, plan: DataPlan) -> DataPlan:
    """A re-collection plan ``<name>-gaps`` holding only the cells below target.

    It counts only what is collected under its own name (``quota_scope: plan``), and each cell's
    target is the parent's shortfall plus what the gap plan already collected in it, so the gap
    plan's remaining count always equals the parent's and regenerating it mid-collection gives the
    same plan (the cells filled meanwhile drop out).
    """
    name = gaps_name(plan.name)
    statuses = [s for s in plan_status(session, plan) if s.remaining > 0]
    gaps = replace(plan, name=name, parent=plan.name, quota_scope="plan",
                   description=f"Re-collection plan for {plan.name}: the cells still below target.",
                   cells=tuple(replace(s.cell, target=s.remaining) for s in statuses))
    own = plan_status(session, gaps)
    return replace(gaps, cells=tuple(replace(s.cell, target=s.cell.target + s.collected) for s in own))


def totals(statuses: Sequence[CellStatus]) -> tuple[int, int, int]:
    """(target, collected capped at each cell's target, labeled capped likewise) over all cells."""
    return (sum(s.target for s in statuses), sum(min(s.collected, s.target) for s in statuses),
            sum(min(s.labeled, s.target) for s in statuses))


def status_table(statuses: Sequence[CellStatus], title: str = "", only_gaps: bool = False) -> Table:
    """A rich table, one row per cell (only cells below target when ``only_gaps``), totals in the footer;
    ``left`` = utterances still missing, ``labeled`` = recordings with a reviewed label."""
    target, collected, labeled = totals(statuses)
    # Short headers and a light box: the table fits an 80-column terminal.
    table = Table(title=title or None, show_footer=True, box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for header, foot in zip(("age", "gender", "dialect", "env"), ("total", "", "", ""), strict=True):
        table.add_column(header, footer=foot, no_wrap=True)
    table.add_column("target", justify="right", footer=str(target), min_width=6)
    table.add_column("collected", justify="right", footer=str(collected), min_width=9)
    table.add_column("labeled", justify="right", footer=str(labeled), min_width=7)
    table.add_column("left", justify="right", footer=str(target - collected), min_width=4)
    table.add_column("fill", justify="right", footer=f"{collected / target:.0%}" if target else "-")
    for s in statuses:
        if only_gaps and s.remaining == 0:
            continue
        style = "green" if s.remaining == 0 else ("yellow" if s.collected else "red")
        table.add_row(*s.cell.axes, str(s.target), str(s.collected), str(s.labeled), str(s.remaining),
                      f"{min(s.fill, 9.99):.0%}", style=style)
    return table


def _order(values: set[str], vocabulary: Sequence[str]) -> list[str]:
    known = [v for v in vocabulary if v in values]
    return known + sorted(values - set(known))


def plot_status(statuses: Sequence[CellStatus], path: str | Path, title: str = "") -> Path:
    """Two heatmaps (collected / target and reviewed labels / target) as a PNG at ``path``: rows
    are age band × gender, columns dialect × environment; each square reads ``count/target``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = [s.cell for s in statuses]
    rows = [(a, g) for a in _order({c.age_band for c in cells}, AGE_BANDS)
            for g in _order({c.gender for c in cells}, GENDERS) if any(c.axes[:2] == (a, g) for c in cells)]
    dialects = list(dict.fromkeys(c.dialect for c in cells))
    cols = [(d, e) for d in dialects for e in _order({c.environment for c in cells}, list(ENVIRONMENTS))
            if any((c.dialect, c.environment) == (d, e) for c in cells)]
    by_pos = {(s.cell.axes[:2], s.cell.axes[2:]): s for s in statuses}
    width = max(6.0, 0.55 * len(cols) + 2.0)
    height = max(2.5, 0.38 * len(rows) + 1.6)
    fig, axes = plt.subplots(2, 1, figsize=(width, 2 * height), squeeze=False)
    if not statuses:  # a re-collection plan of a filled plan: say so instead of drawing empty axes
        for ax in axes[:, 0]:
            ax.axis("off")
        axes[0, 0].text(0.5, 0.5, "no cells: nothing left to collect", ha="center", va="center")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#eeeeee")  # grey: not in the plan
    for ax, (label, pick) in zip(axes[:, 0], (("collected / target", lambda s: s.collected),
                                               ("reviewed labels / target", lambda s: s.labeled)), strict=True):
        ratio = np.full((len(rows), len(cols)), np.nan)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                s = by_pos.get((r, c))
                if s is None:
                    continue
                ratio[i, j] = min(pick(s) / s.target, 1.0) if s.target else 1.0
                dark = not 0.2 <= ratio[i, j] <= 0.8  # both ends of the colour map are dark
                ax.text(j, i, f"{pick(s)}/{s.target}", ha="center", va="center", fontsize=6,
                        color="white" if dark else "black")
        ax.imshow(np.ma.masked_invalid(ratio), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(cols)), [f"{d}\n{e}" for d, e in cols], fontsize=6, rotation=90)
        ax.set_yticks(range(len(rows)), [f"{a} {g}" for a, g in rows], fontsize=7)
        done = sum(min(pick(s), s.target) for s in statuses)
        total = sum(s.target for s in statuses)
        ax.set_title(f"{label}: {done}/{total}" + (f" ({done / total:.0%})" if total else ""), fontsize=9)
        # Vertical rules between dialects make the column groups readable.
        edges = [j - 0.5 for j in range(1, len(cols)) if cols[j][0] != cols[j - 1][0]]
        for x in edges:
            ax.axvline(x, color="black", linewidth=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
