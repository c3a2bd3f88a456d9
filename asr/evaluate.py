"""Evaluation: WER, CER and command exact-match, overall and per slice, with bootstrap confidence intervals.

Conventions (see docs/evaluation.md):
- references and hypotheses are normalised with the language pack first;
- WER splits on spaces; CER counts characters with spaces removed (Korean spacing is inconsistent and
  a spacing slip is not a recognition error a user notices);
- command exact-match: the whole command recognised exactly, spaces ignored — what decides whether
  the speaker does the right thing;
- a 95 % interval comes from resampling utterances with replacement (corpus-level rates, 1000 draws).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer
import numpy as np
from rich.console import Console
from rich.table import Table


def _chars(text: str) -> str:
    return " ".join(text.replace(" ", ""))


def edit_counts(ref: str, hyp: str) -> tuple[int, int, int, int]:
    """(word edits, reference words, char edits, reference chars) for one normalised pair."""
    w_ref = len(ref.split())
    c_ref = len(ref.replace(" ", ""))
    w = jiwer.process_words(ref, hyp) if w_ref else None
    c = jiwer.process_words(_chars(ref), _chars(hyp)) if c_ref else None
    w_edits = (w.substitutions + w.deletions + w.insertions) if w else len(hyp.split())
    c_edits = (c.substitutions + c.deletions + c.insertions) if c else len(hyp.replace(" ", ""))
    return w_edits, w_ref, c_edits, c_ref


def corpus_cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    counts = np.array([edit_counts(r, h) for r, h in zip(refs, hyps, strict=True)], dtype=float)
    return float(counts[:, 2].sum() / max(1.0, counts[:, 3].sum())) if len(counts) else float("nan")


@dataclass
class Metrics:
    n: int
    wer: float
    cer: float
    exact_match: float
    wer_ci: tuple[float, float]
    cer_ci: tuple[float, float]
    exact_match_ci: tuple[float, float]


def _rates(counts: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """counts: (draws, n, 4) or (n, 4) → (..., 3) = wer, cer, exact-match."""
    s = counts.sum(axis=-2)
    return np.stack(
        [s[..., 0] / np.maximum(s[..., 1], 1), s[..., 2] / np.maximum(s[..., 3], 1), exact.mean(axis=-1)], axis=-1
    )


def metrics(counts: np.ndarray, exact: np.ndarray, draws: int = 1000, seed: int = 0) -> Metrics:
    """counts: (n, 4) from ``edit_counts``; exact: (n,) 0/1."""
    point = _rates(counts, exact)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), size=(draws, len(counts)))
    boot = _rates(counts[idx], exact[idx])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    r = [round(float(v), 4) for v in point]
    ci = [(round(float(a), 4), round(float(b), 4)) for a, b in zip(lo, hi, strict=True)]
    return Metrics(len(counts), r[0], r[1], r[2], ci[0], ci[1], ci[2])


@dataclass
class EvalReport:
    overall: Metrics
    slices: dict[str, dict[str, Metrics]]
    utterances: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "overall": asdict(self.overall),
            "slices": {k: {v: asdict(m) for v, m in vals.items()} for k, vals in self.slices.items()},
            "utterances": self.utterances,
        }

    @classmethod
    def from_dict(cls, d: dict) -> EvalReport:
        """The inverse of :meth:`to_dict` (cached reports, ``<split>.json`` files)."""
        def m(x: dict) -> Metrics:
            return Metrics(int(x["n"]), x["wer"], x["cer"], x["exact_match"], tuple(x["wer_ci"]), tuple(x["cer_ci"]),
                           tuple(x["exact_match_ci"]))

        return cls(m(d["overall"]), {k: {v: m(x) for v, x in vals.items()} for k, vals in d["slices"].items()},
                   list(d.get("utterances") or []))

    def write_json(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    def flat_metrics(self) -> dict[str, float]:
        """MLflow-friendly: ``cer``, ``cer.dialect.jeolla``, … (``n`` included per slice)."""
        out = {"wer": self.overall.wer, "cer": self.overall.cer, "exact_match": self.overall.exact_match}
        for key, vals in self.slices.items():
            for value, m in vals.items():
                for name in ("wer", "cer", "exact_match", "n"):
                    out[f"{name}.{key}.{value}"] = float(getattr(m, name))
        return out

    def table(self, title: str = "evaluation") -> Table:
        t = Table(title=title)
        for col in ("slice", "n", "WER", "CER (95% CI)", "exact match (95% CI)"):
            t.add_column(col, justify="left" if col == "slice" else "right")

        def row(name: str, m: Metrics) -> None:
            t.add_row(name, str(m.n), f"{m.wer:.1%}", f"{m.cer:.1%} ({m.cer_ci[0]:.1%}–{m.cer_ci[1]:.1%})",
                      f"{m.exact_match:.1%} ({m.exact_match_ci[0]:.1%}–{m.exact_match_ci[1]:.1%})")

        row("overall", self.overall)
        for key, vals in self.slices.items():
            for value, m in sorted(vals.items()):
                row(f"{key}={value}", m)
        return t

    def print(self, title: str = "evaluation", console: Console | None = None) -> None:
        (console or Console()).print(self.table(title))


def score(
    refs: Sequence[str],
    hyps: Sequence[str],
    slices: Sequence[dict[str, str]],
    ids: Sequence[str] | None = None,
    confidences: Sequence[float] | None = None,
) -> EvalReport:
    """Score normalised ``refs``/``hyps``; ``slices[i]`` maps slice key → value for utterance i
    (the keys come from the data: ``collection.manifest.Utterance.slices``)."""
    if not refs:
        raise ValueError("nothing to evaluate: no utterances")
    counts = np.array([edit_counts(r, h) for r, h in zip(refs, hyps, strict=True)], dtype=float)
    exact = np.array([r.replace(" ", "") == h.replace(" ", "") for r, h in zip(refs, hyps, strict=True)], dtype=float)
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, s in enumerate(slices):
        for key, value in s.items():
            groups[key][value].append(i)
    by_slice = {k: {v: metrics(counts[ix], exact[ix]) for v, ix in vals.items()} for k, vals in groups.items()}
    utts = []
    for i, (r, h) in enumerate(zip(refs, hyps, strict=True)):
        utts.append({
            "id": ids[i] if ids else str(i), "ref": r, "hyp": h,
            "confidence": None if confidences is None else round(float(confidences[i]), 4),
            "cer": round(counts[i, 2] / max(counts[i, 3], 1), 4), **slices[i],
        })
    return EvalReport(metrics(counts, exact), by_slice, utts)


def evaluate(recognizer, utterances, batch_size: int = 16) -> EvalReport:
    """Transcribe ``utterances`` (collection.manifest.Utterance) with ``recognizer`` and score them."""
    from rich.progress import track

    from .audio import load_audio

    normalize = recognizer.normalize
    hyps = []
    utterances = list(utterances)
    for start in track(range(0, len(utterances), batch_size), description="evaluating", transient=True):
        chunk = utterances[start : start + batch_size]
        hyps.extend(recognizer.transcribe_batch([load_audio(u.audio_path) for u in chunk]))
    return score(
        [normalize(u.text) for u in utterances],
        [h.text for h in hyps],
        [u.slices for u in utterances],
        ids=[u.id for u in utterances],
        confidences=[h.confidence for h in hyps],
    )
