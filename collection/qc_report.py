"""What quality control kept and refused, per source and reason, and what the kept audio is like.

Groups are the recording source (synthetic / upload / import / production); imports are split
by corpus format (``import:commonvoice``…) from the ``<fmt>:`` prefix of their external id
(see :mod:`collection.importers`). Durations are seconds, SNR in dB (QC's estimate, stored in
each recording's ``qc`` metrics).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Recording, Rejection


@dataclass(frozen=True)
class Distribution:
    """Median and 10th/90th percentiles of ``n`` values (None when there are none)."""

    n: int = 0
    median: float | None = None
    p10: float | None = None
    p90: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Distribution:
        if not values:
            return cls()
        p10, median, p90 = (round(float(v), 3) for v in np.percentile(np.asarray(values, dtype=float), [10, 50, 90]))
        return cls(n=len(values), median=median, p10=p10, p90=p90)

    def __str__(self) -> str:
        if not self.n:
            return "-"
        return f"{self.median:.1f} ({self.p10:.1f}–{self.p90:.1f})"


@dataclass(frozen=True)
class SourceQc:
    """One group: accepted recordings, rejections by reason, and the accepted audio's figures."""

    source: str
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    hours: float = 0.0
    duration: Distribution = Distribution()  # seconds
    snr_db: Distribution = Distribution()

    @property
    def acceptance(self) -> float | None:
        """Share of submissions accepted, in [0, 1]."""
        total = self.accepted + self.rejected
        return self.accepted / total if total else None


@dataclass(frozen=True)
class QcReport:
    sources: list[SourceQc]
    total: SourceQc

    def to_dict(self) -> dict[str, Any]:
        return {"sources": [asdict(s) for s in self.sources], "total": asdict(self.total)}

    def render(self, console: Console | None = None, title: str = "Quality control") -> None:
        """Two tables: per-source acceptance with duration/SNR of what was kept; rejections by reason."""
        console = console or Console()
        table = Table(title=title)
        for col, justify in (("source", "left"), ("accepted", "right"), ("rejected", "right"),
                             ("accept %", "right"), ("hours", "right"), ("duration s: median (p10–p90)", "right"),
                             ("SNR dB: median (p10–p90)", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for i, s in enumerate([*self.sources, self.total]):
            share = "-" if s.acceptance is None else f"{s.acceptance:.0%}"
            table.add_row(s.source, str(s.accepted), str(s.rejected), share, f"{s.hours:.2f}", str(s.duration),
                          str(s.snr_db), end_section=i == len(self.sources) - 1)
        console.print(table)
        reasons = Table(title="Rejections by reason")
        reasons.add_column("reason")
        for s in self.sources:
            reasons.add_column(s.source, justify="right")
        reasons.add_column("total", justify="right")
        for reason, n in sorted(self.total.reasons.items(), key=lambda kv: -kv[1]):
            reasons.add_row(reason, *(str(s.reasons.get(reason, 0)) for s in self.sources), str(n))
        if self.total.reasons:
            console.print(reasons)


def group_of(source: str, external_id: str | None) -> str:
    """``import:<fmt>`` for imported items (from the external id's ``<fmt>:`` prefix), else the source."""
    if source == "import" and external_id and ":" in external_id:
        return f"import:{external_id.split(':', 1)[0]}"
    return source


def _matches(group: str, wanted: str | None) -> bool:
    return wanted is None or group == wanted or group.startswith(f"{wanted}:")


def _summarise(name: str, durations: list[float], snrs: list[float], rejected: Counter[str]) -> SourceQc:
    return SourceQc(source=name, accepted=len(durations), rejected=sum(rejected.values()), reasons=dict(rejected),
                    hours=round(sum(durations) / 3600, 4), duration=Distribution.of(durations),
                    snr_db=Distribution.of(snrs))


def qc_report(session: Session, *, source: str | None = None) -> QcReport:
    """Counts and distributions over the whole catalog, or one ``source`` (``import`` covers every
    format; ``import:kaldi`` one of them)."""
    durations: dict[str, list[float]] = defaultdict(list)
    snrs: dict[str, list[float]] = defaultdict(list)
    rejected: dict[str, Counter[str]] = defaultdict(Counter)
    query = select(Recording.source, Recording.external_id, Recording.duration, Recording.qc)
    rej_query = select(Rejection.source, Rejection.external_id, Rejection.reason)
    if source is not None:  # narrow in SQL to the base source; format groups are filtered below
        query = query.where(Recording.source == source.split(":", 1)[0])
        rej_query = rej_query.where(Rejection.source == source.split(":", 1)[0])
    for src, ext, duration, qc in session.execute(query):
        group = group_of(src, ext)
        if _matches(group, source):
            durations[group].append(float(duration))
            if (qc or {}).get("snr_db") is not None:
                snrs[group].append(float(qc["snr_db"]))
    for src, ext, reason in session.execute(rej_query):
        group = group_of(src, ext)
        if _matches(group, source):
            rejected[group][reason] += 1
    groups = sorted(set(durations) | set(rejected))
    per_source = [_summarise(g, durations[g], snrs[g], rejected[g]) for g in groups]
    total = _summarise("total", [d for g in groups for d in durations[g]], [s for g in groups for s in snrs[g]],
                       sum((rejected[g] for g in groups), Counter()))
    return QcReport(per_source, total)
