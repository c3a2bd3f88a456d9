"""The release gate: may a challenger replace the champion?

Promote only when the challenger is better overall, no slice (dialect, age band, room, …) regresses
beyond a margin — judged with bootstrap confidence intervals, so noise on a small slice neither blocks a
good model nor lets a bad one through — and its latency and size stay within budget.

This module is the decision only, on numbers the callers gather: ``voiceloop.release`` scores both models
on the evaluation set (the frozen gold set plus recent labeled production data), ``serving.rollout``
scores shadow and canary traffic. Both call :func:`compare` and record the :class:`GateDecision` it
returns (MLflow and the catalog), so one rule decides every step of a release.

Errors are counted per character (CER: Korean words are long and spacing varies, so WER punishes a
spacing slip like a wrong word). When both sides scored the same utterances (the evaluation set, shadow
traffic) the bootstrap resamples utterances in pairs — the difference between two models on the same
audio is far less noisy than either number alone; otherwise (canary: different requests) each side is
resampled on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.table import Table

from .evaluate import EvalReport, edit_counts

OVERALL = ("all", "all")


@dataclass(frozen=True)
class Scored:
    """One utterance as one model heard it: character edits against the reference and the reference's
    length (spaces excluded), and the slices it belongs to."""

    id: str
    slices: Mapping[str, str]
    errors: float
    length: float


def scored_from_report(report: EvalReport) -> list[Scored]:
    """The per-utterance records of an :class:`~asr.evaluate.EvalReport` (what ``evaluate`` wrote)."""
    keys = tuple(report.slices)
    out = []
    for u in report.utterances:
        _, _, errors, length = edit_counts(u["ref"], u["hyp"])
        out.append(Scored(str(u["id"]), {k: str(u[k]) for k in keys if u.get(k) is not None}, errors, length))
    return out


def scored(ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str],
           slices: Sequence[Mapping[str, str]]) -> list[Scored]:
    """Records from normalised references and hypotheses (shadow and canary traffic)."""
    out = []
    for i, ref, hyp, s in zip(ids, refs, hyps, slices, strict=True):
        _, _, errors, length = edit_counts(ref, hyp)
        out.append(Scored(str(i), dict(s), errors, length))
    return out


@dataclass(frozen=True)
class GateConfig:
    """The rule. Error rates are fractions (0.01 = one point of CER)."""

    min_gain: float = 0.0  # overall CER must fall by more than this
    slice_margin: float = 0.01  # a slice regresses when its CER rises by more than this …
    # … and the 95 % interval of the rise lies above zero (a rise that noise explains does not block)
    min_slice_n: int = 20  # slices with fewer utterances (on either side) are shown, not judged
    latency_budget: float = 1.25  # challenger p95 latency at most this × the champion's (or + the slack) …
    latency_slack_ms: float = 20.0  # … timing noise on a busy machine is milliseconds, whatever the model
    max_latency_ms: float | None = None  # … and at most this, when set
    # A live p95 of fewer timings (either side) rests on its few slowest requests: shown, not judged
    min_latency_n: int = 100
    size_budget: float = 1.5  # challenger checkpoint at most this × the champion's …
    max_size_mb: float | None = None  # … and at most this, when set
    draws: int = 1000
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> GateConfig:  # noqa: ANN401 - voiceloop.settings.Settings
        return cls(min_gain=settings.gate_min_gain, slice_margin=settings.gate_slice_margin,
                   min_slice_n=settings.gate_min_slice_n, latency_budget=settings.gate_latency_budget,
                   min_latency_n=settings.gate_min_latency_n, size_budget=settings.gate_size_budget)

    def __post_init__(self) -> None:
        if self.slice_margin < 0 or self.min_gain < 0 or self.min_slice_n < 1 or self.min_latency_n < 1 \
                or self.draws < 100:
            raise ValueError("slice_margin and min_gain must be >= 0, min_slice_n and min_latency_n >= 1, "
                             "draws >= 100")
        if self.latency_budget < 1 or self.size_budget < 1:
            raise ValueError("latency_budget and size_budget are ratios >= 1 (the challenger may not be "
                             "faster-only: 1.0 means no slack)")


@dataclass(frozen=True)
class Delta:
    """CER of one slice, champion vs challenger; ``delta`` = challenger − champion (negative: better) with
    its 95 % bootstrap interval. ``judged``: enough utterances to count; ``regressed``: the rule fired."""

    key: str
    value: str
    n_champion: int
    n_challenger: int
    champion: float
    challenger: float
    delta: float
    ci: tuple[float, float]
    paired: bool
    judged: bool = True
    regressed: bool = False


@dataclass(frozen=True)
class Budget:
    """Latency (p95 ms) or size (MB): the challenger's value against ``limit``; ``ok``: within it;
    ``judged``: measured on enough to count (a budget not judged is shown and never blocks)."""

    name: str
    champion: float
    challenger: float
    limit: float
    ok: bool
    judged: bool = True


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]  # each rule that failed (empty when promoted), in words with the numbers
    overall: Delta
    slices: list[Delta]
    budgets: list[Budget] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateDecision:
        """The inverse of :meth:`to_dict` (a decision read back from the catalog or ``gate.json``)."""
        def delta(x: Mapping[str, Any]) -> Delta:
            return Delta(**{**x, "ci": tuple(x["ci"])})

        return cls(bool(d["promote"]), list(d["reasons"]), delta(d["overall"]), [delta(x) for x in d["slices"]],
                   [Budget(**b) for b in d.get("budgets", [])])

    @property
    def summary(self) -> str:
        if self.promote:
            return (f"promote: CER {self.overall.champion:.2%} → {self.overall.challenger:.2%}, "
                    f"no slice regressed beyond the margin")
        return "refuse: " + "; ".join(self.reasons)

    def metrics(self, prefix: str = "gate") -> dict[str, float]:
        """Flat numbers for MLflow: ``gate.cer.champion``, ``gate.cer_delta.dialect.jeolla``, …"""
        out = {f"{prefix}.promote": float(self.promote), f"{prefix}.cer.champion": self.overall.champion,
               f"{prefix}.cer.challenger": self.overall.challenger, f"{prefix}.cer_delta": self.overall.delta}
        for d in self.slices:
            out[f"{prefix}.cer_delta.{d.key}.{d.value}"] = d.delta
        for b in self.budgets:
            out[f"{prefix}.{b.name}.champion"] = b.champion
            out[f"{prefix}.{b.name}.challenger"] = b.challenger
        return out

    def table(self, title: str = "release gate") -> Table:
        t = Table(title=f"{title}: {'PROMOTE' if self.promote else 'REFUSE'}")
        for col in ("slice", "n", "champion CER", "challenger CER", "change (95% CI)", "verdict"):
            t.add_column(col, justify="left" if col in ("slice", "verdict") else "right")
        for d in (self.overall, *self.slices):
            verdict = "regressed" if d.regressed else ("ok" if d.judged else "too few to judge")
            style = "red" if d.regressed else (None if d.judged else "dim")
            t.add_row("overall" if (d.key, d.value) == OVERALL else f"{d.key}={d.value}",
                      f"{d.n_challenger}", f"{d.champion:.2%}", f"{d.challenger:.2%}",
                      f"{d.delta:+.2%} ({d.ci[0]:+.2%} … {d.ci[1]:+.2%})", verdict, style=style)
        for b in self.budgets:
            t.add_row(b.name, "", f"{b.champion:.1f}", f"{b.challenger:.1f}", f"limit {b.limit:.1f}",
                      "ok" if b.ok else "over budget", style=None if b.ok else "red")
        return t


def _delta(key: str, value: str, champion: list[Scored], challenger: list[Scored], config: GateConfig,
           rng: np.random.Generator) -> Delta:
    """Point CERs and the bootstrap interval of their difference (paired when both sides hold the same ids)."""
    a = np.array([[s.errors, s.length] for s in champion], dtype=float).reshape(-1, 2)
    b = np.array([[s.errors, s.length] for s in challenger], dtype=float).reshape(-1, 2)

    def cer(x: np.ndarray) -> np.ndarray:  # (..., n, 2) -> (...)
        return x[..., 0].sum(axis=-1) / np.maximum(x[..., 1].sum(axis=-1), 1.0)

    point_a, point_b = float(cer(a)), float(cer(b))
    paired = len(a) == len(b) and [s.id for s in champion] == [s.id for s in challenger]
    if not len(a) or not len(b):
        ci = (float("nan"), float("nan"))
    elif paired:
        idx = rng.integers(0, len(a), size=(config.draws, len(a)))
        diffs = cer(b[idx]) - cer(a[idx])
        ci = tuple(float(v) for v in np.percentile(diffs, [2.5, 97.5]))
    else:
        ia = rng.integers(0, len(a), size=(config.draws, len(a)))
        ib = rng.integers(0, len(b), size=(config.draws, len(b)))
        diffs = cer(b[ib]) - cer(a[ia])
        ci = tuple(float(v) for v in np.percentile(diffs, [2.5, 97.5]))
    judged = min(len(a), len(b)) >= config.min_slice_n
    delta = point_b - point_a
    regressed = judged and (key, value) != OVERALL and delta > config.slice_margin and ci[0] > 0
    return Delta(key, value, len(a), len(b), round(point_a, 4), round(point_b, 4), round(delta, 4),
                 (round(ci[0], 4), round(ci[1], 4)), paired, judged, regressed)


def _budget(name: str, champion: float, challenger: float, ratio: float, cap: float | None,
            slack: float = 0.0, judged: bool = True) -> Budget:
    limit = max(champion * ratio, champion + slack)
    limit = limit if cap is None else min(limit, cap)
    return Budget(name, round(champion, 2), round(challenger, 2), round(limit, 2), challenger <= limit, judged)


def compare(champion: Sequence[Scored], challenger: Sequence[Scored], config: GateConfig = GateConfig(), *,
            latency_ms: tuple[float, float] | None = None, latency_stat: str = "p95",
            latency_n: int | None = None, size_mb: tuple[float, float] | None = None) -> GateDecision:
    """Apply the rule. ``champion``/``challenger``: each model's scored utterances (the same ids in the same
    order when both heard the same audio); ``latency_ms`` and ``size_mb``: (champion, challenger) latency
    (the ``latency_stat`` percentile: p95 of served traffic; the offline gate's p50 of interleaved decodes,
    since a p95 of a few dozen timings on a shared machine is its noise) and checkpoint size, checked
    against the budgets when given. ``latency_n``: the timings on the smaller side, when the latency is a
    percentile of traffic (below ``config.min_latency_n`` the latency is shown, not judged).

    Raises:
        ValueError: nothing to compare (either side empty).
    """
    if not champion or not challenger:
        raise ValueError(f"the gate needs scored utterances from both models (champion {len(champion)}, "
                         f"challenger {len(challenger)})")
    ids = [s.id for s in champion]
    if sorted(ids) == sorted(s.id for s in challenger) and ids != [s.id for s in challenger]:
        order = {s.id: i for i, s in enumerate(champion)}  # same audio, other order: pair them up
        challenger = sorted(challenger, key=lambda s: order[s.id])
    rng = np.random.default_rng(config.seed)
    overall = _delta(*OVERALL, list(champion), list(challenger), config, rng)
    groups: dict[tuple[str, str], tuple[list[Scored], list[Scored]]] = {}
    for side, records in enumerate((champion, challenger)):
        for s in records:
            for key, value in s.slices.items():
                groups.setdefault((key, value), ([], []))[side].append(s)
    slices = [_delta(k, v, a, b, config, rng) for (k, v), (a, b) in sorted(groups.items()) if a and b]
    reasons = []
    if not overall.delta < -config.min_gain:
        reasons.append(f"not better overall: CER {overall.champion:.2%} → {overall.challenger:.2%} "
                       f"(must fall by more than {config.min_gain:.2%})")
    for d in slices:
        if d.regressed:
            reasons.append(f"{d.key}={d.value} regressed: CER {d.champion:.2%} → {d.challenger:.2%} "
                           f"(+{d.delta:.2%}, 95% CI {d.ci[0]:+.2%} … {d.ci[1]:+.2%}; "
                           f"margin {config.slice_margin:.2%})")
    budgets = []
    if latency_ms is not None:
        judged = latency_n is None or latency_n >= config.min_latency_n
        budgets.append(_budget(f"latency_{latency_stat}_ms", *latency_ms, config.latency_budget, config.max_latency_ms,
                               config.latency_slack_ms, judged))
    if size_mb is not None:
        budgets.append(_budget("size_mb", *size_mb, config.size_budget, config.max_size_mb))
    reasons += [f"{b.name} {b.challenger:.1f} over the budget {b.limit:.1f} (champion {b.champion:.1f})"
                for b in budgets if b.judged and not b.ok]
    return GateDecision(not reasons, reasons, overall, slices, budgets)


def first_release(challenger: Sequence[Scored], config: GateConfig = GateConfig()) -> GateDecision:
    """The decision when there is no champion yet: the first model is promoted on its own numbers."""
    rng = np.random.default_rng(config.seed)
    overall = _delta(*OVERALL, list(challenger), list(challenger), config, rng)
    return GateDecision(True, [], overall, [])


__all__ = ["GateConfig", "GateDecision", "Delta", "Budget", "Scored", "compare", "first_release", "scored",
           "scored_from_report"]
