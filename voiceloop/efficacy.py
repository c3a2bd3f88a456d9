"""Did one turn of the loop close the gaps? Each weak slice's CER gap to standard speech before and after,
the share of it closed, and the targets (issue 6) — the table, figure and wall-clock per phase both the
loop demo and bench/loop_efficacy.py print."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

TARGET_GAP_CLOSED = 0.70  # of each weak slice's gap to standard speech
TARGET_STANDARD_SLIP = 0.005  # standard speech may get worse by at most half a CER point


@dataclass
class Phases:
    """Wall-clock per phase of one loop turn (the second target: one demo loop within 30 minutes)."""

    console: Console
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds, in order

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.console.rule(f"[bold]{len(self.seconds) + 1}. {name}")
        started = time.perf_counter()
        try:
            yield
        finally:  # a failed phase still shows how long it ran
            self.seconds[name] = round(time.perf_counter() - started, 1)
            self.console.print(f"[dim]{name}: {self.seconds[name] / 60:.1f} min")

    def table(self) -> Table:
        t = Table("phase", "minutes", title="wall-clock of the loop")
        for name, seconds in self.seconds.items():
            t.add_row(name, f"{seconds / 60:.1f}")
        t.add_row("[bold]total", f"[bold]{sum(self.seconds.values()) / 60:.1f}")
        return t


@dataclass(frozen=True)
class SliceRow:
    slice: str
    n: int
    cer_before: float
    cer_after: float
    gap_before: float  # CER minus standard speech's CER (0 for standard itself)
    gap_after: float
    gap_closed: float | None  # 1.0 = closed, < 0 = wider; None for standard, or a slice with no gap before


def gap_rows(before: Mapping[str, tuple[int, float]], after: Mapping[str, tuple[int, float]],
             standard: str) -> list[SliceRow]:
    """``before``/``after``: slice → (n, CER). Standard speech first, then the other slices in order."""
    s0, s1 = before[standard][1], after[standard][1]
    rows = []
    for name in [standard, *(k for k in before if k != standard)]:
        (n, b), a = before[name], after[name][1]
        gb, ga = b - s0, a - s1
        closed = None if name == standard or gb <= 0 else 1 - ga / gb
        rows.append(SliceRow(name, n, b, a, gb, ga, closed))
    return rows


def standard_slip(rows: Sequence[SliceRow]) -> float:
    return rows[0].cer_after - rows[0].cer_before


def target_met(rows: Sequence[SliceRow]) -> bool:
    return (all(r.gap_closed is not None and r.gap_closed >= TARGET_GAP_CLOSED for r in rows[1:])
            and standard_slip(rows) <= TARGET_STANDARD_SLIP)


def gap_table(rows: Sequence[SliceRow], title: str) -> Table:
    t = Table(title=title)
    for col in ("slice", "n", "CER before", "CER after", "gap before", "gap after", "gap closed"):
        t.add_column(col, justify="left" if col == "slice" else "right")
    for r in rows:
        if r is rows[0]:
            t.add_row(r.slice, str(r.n), f"{r.cer_before:.1%}", f"{r.cer_after:.1%}", "—", "—", "—")
            continue
        ok = r.gap_closed is not None and r.gap_closed >= TARGET_GAP_CLOSED
        closed = "n/a" if r.gap_closed is None else f"[{'green' if ok else 'red'}]{r.gap_closed:.0%}"
        t.add_row(r.slice, str(r.n), f"{r.cer_before:.1%}", f"{r.cer_after:.1%}", f"{r.gap_before:+.1%}",
                  f"{r.gap_after:+.1%}", closed)
    return t


def verdict(rows: Sequence[SliceRow]) -> str:
    """One line: the standard slice's change and whether the targets were met."""
    met = "[green]met" if target_met(rows) else "[red]not met"
    return (f"standard CER {100 * standard_slip(rows):+.2f} points; target (each gap closed ≥ "
            f"{TARGET_GAP_CLOSED:.0%}, standard ≤ +{100 * TARGET_STANDARD_SLIP:.1f} pt): {met}")


def plot_gaps(rows: Sequence[SliceRow], path: Path, title: str, decoder: str) -> Path:
    from asr.plots import plot_before_after

    return plot_before_after([(r.slice.replace("dialect=", "").replace("age_band=", "age "), r.cer_before,
                               r.cer_after) for r in rows], path, title,
                             ylabel=f"CER, {'beam + LM' if decoder == 'beam' else decoder} (%)",
                             labels=("before (champion)", "after one loop"))


__all__ = ["TARGET_GAP_CLOSED", "TARGET_STANDARD_SLIP", "SliceRow", "gap_rows", "gap_table", "plot_gaps",
           "standard_slip", "target_met", "verdict"]
