"""The drift job: one window of production traffic → ``SliceMetric`` rows for every slice and model version.

    result = compute_window(catalog_url, window_end, 3600, baselines=MlflowBaselines("voiceloop-asr"),
                            reference=champion_reference(...))

For the window ``[window_end - window_s, window_end)`` and each slice (``all`` and every value of dialect,
age_band, environment, device_type), overall (``model_version=""``) and per model version, it writes:

- traffic: ``utterances``; ``utterances_ref`` (mean per window over the reference period, for no-traffic);
- label-free: ``confidence_mean`` (95 % normal interval), ``confidence_ref`` and ``confidence_drift``
  (this window minus the n-weighted mean of the previous windows), ``out_of_grammar_share``, and
  ``psi_<feature>`` / ``ks_<feature>`` of duration, speech_dbfs, snr_db, speech_rate against the reference
  profile of the training set (``monitoring.reference``);
- VOC: ``voc_per_1k`` (complaints created in the window per 1,000 utterances; ``n`` = complaints) and
  ``voc_per_1k_ref``;
- with human transcripts, over the longer ``labeled_window_s`` ending at the same time (rows keyed by that
  window length): ``wer``, ``cer``, ``exact_match`` with bootstrap intervals (``asr.evaluate.metrics``), and
  the offline ``wer_baseline`` / ``cer_baseline`` of the same slice (``monitoring.baseline``).

Everything over production rows is aggregated in the database: one GROUP BY over the slice columns with
binned counts (``SUM(CASE WHEN x < edge …)``) for the histograms; Python only adds up the grouped rows
(hundreds to thousands) into slices. Edit distances are computed only for the labeled utterances.
Re-running a window upserts the same rows (the unique key is window/slice/version/metric) and deletes
rows of that window no longer produced, so a re-run gives exactly the rows a first run would.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import and_, case, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from asr.evaluate import edit_counts, metrics
from asr.text import get_language_pack
from collection.models import Feedback, Label, ProductionUtterance, SliceMetric, aware, utcnow

from .baseline import Baseline, BaselineSource, as_source
from .reference import FEATURES, ReferenceProfile, bin_counts, ks_binned, psi
from .slices import ALL, SLICE_KEYS, UNKNOWN

if TYPE_CHECKING:
    from voiceloop.settings import Settings

log = logging.getLogger(__name__)

HOUR, DAY = 3600, 86400
# Metrics of the traffic window and of the labeled window (each a fixed set, so a re-run can tell which
# rows it owns).
TRAFFIC_METRICS = ("utterances", "utterances_ref", "confidence_mean", "confidence_ref", "confidence_drift",
                   "out_of_grammar_share", "voc_per_1k", "voc_per_1k_ref",
                   *(f"{kind}_{name}" for name in FEATURES for kind in ("psi", "ks")))
LABELED_METRICS = ("wer", "cer", "exact_match", "wer_baseline", "cer_baseline")
Key = tuple[str, str, str]  # (slice_key, slice_value, model_version)


@dataclass(frozen=True)
class DriftConfig:
    """``labeled_window_s``: seconds of traffic whose human transcripts make one online WER (transcripts
    are few, so longer than the traffic window); ``reference_window_s``: how far back the previous windows
    that define ``confidence_ref``, ``utterances_ref`` and ``voc_per_1k_ref`` go."""

    labeled_window_s: int = 7 * DAY
    reference_window_s: int = 7 * DAY
    bootstrap_draws: int = 1000
    language: str = "ko"


    @classmethod
    def from_settings(cls, settings: Settings) -> DriftConfig:
        """From the ``drift_*`` settings and the language."""
        return cls(labeled_window_s=settings.drift_labeled_window_s,
                   reference_window_s=settings.drift_reference_window_s,
                   bootstrap_draws=settings.drift_bootstrap_draws, language=settings.language)


@dataclass(frozen=True)
class WindowResult:
    window_end: datetime
    window_s: int
    utterances: int
    labeled: int
    rows: int
    seconds: float


UNITS = {"s": 1, "m": 60, "h": HOUR, "d": DAY, "w": 7 * DAY}
MIN_WINDOW_S, MAX_WINDOW_S = 60, 90 * DAY


def parse_window(text: str) -> int:
    """``"1h"`` → 3600: a whole number with a unit (s, m, h, d, w) or bare seconds, 1 minute to 90 days."""
    raw = text.strip().lower()
    unit = raw[-1] if raw and raw[-1] in UNITS else "s"
    number = raw[:-1] if raw and raw[-1] in UNITS else raw
    if not number.isdigit():
        raise ValueError(f"window {text!r} is not a duration; write a whole number and a unit, e.g. 15m, 1h, 1d "
                         f"(units: {', '.join(UNITS)})")
    seconds = int(number) * UNITS[unit]
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"window {text!r} is {seconds} s; it must be between {MIN_WINDOW_S} s and "
                         f"{MAX_WINDOW_S // DAY} days")
    return seconds


def align(t: datetime, window_s: int) -> datetime:
    """``t`` floored to a multiple of ``window_s`` since the epoch (UTC), so scheduled runs and re-runs name
    the same windows."""
    ts = aware(t).timestamp()
    return datetime.fromtimestamp(ts - ts % window_s, UTC)


def window_ends(until: datetime, window_s: int, count: int = 1) -> list[datetime]:
    """The ends of the ``count`` whole windows up to ``until`` (aligned), oldest first."""
    if window_s <= 0 or count <= 0:
        raise ValueError(f"window_s and count must be positive, got {window_s} and {count}")
    last = align(until, window_s)
    return [last - timedelta(seconds=window_s * i) for i in range(count - 1, -1, -1)]


@contextmanager
def catalog_session(session_or_url: Session | sessionmaker[Session] | str) -> Iterator[Session]:
    """A session on the catalog: a URL or factory gets its own transaction (committed at the end); a
    given Session is used as is and its caller commits."""
    if isinstance(session_or_url, Session):
        yield session_or_url
        return
    from collection.db import session_scope

    with session_scope(session_or_url) as session:
        yield session


def compute_window(session_or_url: Session | sessionmaker[Session] | str, window_end: datetime, window_s: int,
                   *, baselines: Mapping[str, Baseline] | BaselineSource | None = None,
                   reference: ReferenceProfile | None = None, config: DriftConfig | None = None) -> WindowResult:
    """Compute and upsert every ``SliceMetric`` of the window ending at ``window_end`` (``window_s`` seconds).

    ``baselines``: model version label → offline ``Baseline`` (``""``: the champion's, for all traffic),
    a mapping or a callable such as ``MlflowBaselines``; ``reference``: the training-set profile for PSI.
    Without them the job still writes traffic, confidence, VOC and online WER rows."""
    config = config or DriftConfig()
    if window_s <= 0:
        raise ValueError(f"window_s must be a positive number of seconds, got {window_s}")
    started = time.perf_counter()
    end = aware(window_end)
    source = as_source(baselines)
    with catalog_session(session_or_url) as session:
        traffic = _traffic(session, end - timedelta(seconds=window_s), end, reference)
        voc = _voc(session, end - timedelta(seconds=window_s), end)
        history = _history(session, end, window_s, config.reference_window_s)
        rows = _traffic_rows(traffic, voc, history, reference)
        labeled = _labeled(session, end - timedelta(seconds=config.labeled_window_s), end, config)
        labeled_rows = _labeled_rows(labeled, config)
        labeled_rows += _baseline_rows(source, {k for k in (*traffic, *labeled.groups)})
        now = utcnow()
        written = _replace(session, end, window_s, TRAFFIC_METRICS, rows, now)
        written += _replace(session, end, config.labeled_window_s, LABELED_METRICS, labeled_rows, now)
        total = int(traffic.get((ALL, ALL, ""), {}).get("count", 0))
    result = WindowResult(end, window_s, total, labeled.count, written, round(time.perf_counter() - started, 3))
    log.debug("drift window ending %s (%d s): %d utterances, %d labeled, %d rows in %.1f s", end.isoformat(),
             window_s, result.utterances, result.labeled, result.rows, result.seconds)
    return result


# -- traffic and label-free signals: one GROUP BY in the database ----------------------------------------
def _slice_columns(table) -> list:  # noqa: ANN001 - a Table or an alias
    return [func.coalesce(table.c[k], UNKNOWN).label(k) for k in SLICE_KEYS]


def _targets(values: Iterable[str], version: str, per_version: bool = True) -> list[Key]:
    """The slices one group of (dialect, age_band, environment, device_type) values adds to: all traffic and
    each slice key, overall and (when ``per_version``) for its model version."""
    slices = [(ALL, ALL), *zip(SLICE_KEYS, values, strict=True)]
    versions = ("", version) if per_version else ("",)
    return [(k, v, ver) for k, v in slices for ver in versions]


def _rollup(groups: list[tuple[tuple[str, ...], str, np.ndarray]], per_version: bool = True) -> dict[Key, np.ndarray]:
    """Add grouped rows ``(slice values, model version, numbers)`` into every slice they belong to."""
    out: dict[Key, np.ndarray] = {}
    for values, version, numbers in groups:
        for key in _targets(values, version, per_version):
            if key in out:
                out[key] += numbers
            else:
                out[key] = numbers.copy()
    return out


def _traffic(session: Session, start: datetime, end: datetime,
             reference: ReferenceProfile | None) -> dict[Key, dict[str, object]]:
    pu = ProductionUtterance.__table__
    columns = ["count", "conf_n", "conf_sum", "conf_sq", "oog", "grammar_n"]
    aggs = [func.count(), func.count(pu.c.confidence), func.sum(pu.c.confidence),
            func.sum(pu.c.confidence * pu.c.confidence),
            func.sum(case((pu.c.in_grammar.is_(False), 1), else_=0)), func.count(pu.c.in_grammar)]
    features = reference.features if reference is not None else {}
    for name, profile in features.items():
        col = pu.c[FEATURES[name]]
        columns.append(f"{name}:n")
        aggs.append(func.count(col))
        for i, edge in enumerate(profile.edges):
            columns.append(f"{name}:<{i}")
            aggs.append(func.sum(case((col < edge, 1), else_=0)))
    slice_cols = _slice_columns(pu)
    version = func.coalesce(pu.c.model_version, UNKNOWN).label("model_version")
    query = (select(*slice_cols, version, *aggs)
             .where(pu.c.created_at >= start, pu.c.created_at < end)
             .group_by(*slice_cols, version))
    groups = [(tuple(r[:4]), r[4], np.array([float(x or 0) for x in r[5:]])) for r in session.execute(query)]
    index = {c: i for i, c in enumerate(columns)}
    out: dict[Key, dict[str, object]] = {}
    for key, v in _rollup(groups).items():
        out[key] = {c: v[i] for c, i in index.items()}
    for stats in out.values():
        for name, profile in features.items():
            cumulative = [stats[f"{name}:<{i}"] for i in range(len(profile.edges))]
            stats[f"{name}:bins"] = bin_counts(cumulative, float(stats[f"{name}:n"]))  # type: ignore[arg-type]
    return out


def _voc(session: Session, start: datetime, end: datetime) -> dict[Key, float]:
    """Complaints created in the window per slice (the complaint's own slice snapshot) and per model version
    of the utterance it is about (complaints logged without one count only towards all versions)."""
    fb, pu = Feedback.__table__, ProductionUtterance.__table__
    slice_cols = _slice_columns(fb)
    version = func.coalesce(pu.c.model_version, "").label("model_version")
    query = (select(*slice_cols, version, func.count())
             .select_from(fb.outerjoin(pu, pu.c.request_id == fb.c.request_id))
             .where(fb.c.created_at >= start, fb.c.created_at < end)
             .group_by(*slice_cols, version))
    groups = [(tuple(r[:4]), r[4], np.array([float(r[5])])) for r in session.execute(query)]
    with_version = _rollup([g for g in groups if g[1]])
    without = _rollup([g for g in groups if not g[1]], per_version=False)
    out = {k: float(v[0]) for k, v in with_version.items()}
    for k, v in without.items():
        out[k] = out.get(k, 0.0) + float(v[0])
    return out


@dataclass
class _History:
    """What the previous windows of the same length said, per slice (for the *_ref metrics)."""

    windows: int
    utterances: dict[Key, float]
    confidence: dict[Key, tuple[float, float]]  # (sum of mean * n, sum of n)
    voc: dict[Key, float]


def _history(session: Session, end: datetime, window_s: int, reference_window_s: int) -> _History:
    sm = SliceMetric
    rows = session.execute(
        select(sm.slice_key, sm.slice_value, sm.model_version, sm.metric, sm.value, sm.n, sm.window_end)
        .where(sm.window_s == window_s, sm.metric.in_(("utterances", "confidence_mean", "voc_per_1k")),
               sm.window_end >= end - timedelta(seconds=reference_window_s),
               sm.window_end <= end - timedelta(seconds=window_s))).all()
    windows = {r.window_end for r in rows if r.metric == "utterances" and r.slice_key == ALL and not r.model_version}
    utterances: dict[Key, float] = defaultdict(float)
    confidence: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])
    voc: dict[Key, float] = defaultdict(float)
    for r in rows:
        key = (r.slice_key, r.slice_value, r.model_version)
        if r.metric == "utterances":
            utterances[key] += r.value or 0
        elif r.metric == "confidence_mean" and r.value is not None:
            confidence[key][0] += r.value * r.n
            confidence[key][1] += r.n
        elif r.metric == "voc_per_1k":
            voc[key] += r.n
    return _History(len(windows), dict(utterances), {k: (a, b) for k, (a, b) in confidence.items()}, dict(voc))


def _row(key: Key, metric: str, value: float | None, n: float, ci: tuple[float, float] | None = None) -> dict:
    return {"slice_key": key[0], "slice_value": key[1], "model_version": key[2], "metric": metric,
            "value": None if value is None else round(float(value), 6), "n": int(n),
            "ci_low": None if ci is None else round(float(ci[0]), 6),
            "ci_high": None if ci is None else round(float(ci[1]), 6)}


def _traffic_rows(traffic: dict[Key, dict], voc: dict[Key, float], history: _History,
                  reference: ReferenceProfile | None) -> list[dict]:
    rows = []
    keys = set(traffic) | set(voc) | {(ALL, ALL, "")}
    # A slice that had traffic before and none now still gets a row (0), or no-traffic could not be seen.
    keys |= {k for k in history.utterances if not k[2]}
    for key in sorted(keys):
        stats = traffic.get(key, {})
        count = float(stats.get("count", 0))
        rows.append(_row(key, "utterances", count, count))
        if history.windows and key in history.utterances:
            rows.append(_row(key, "utterances_ref", history.utterances[key] / history.windows, history.windows))
        n = float(stats.get("conf_n", 0))
        if n:
            mean = stats["conf_sum"] / n
            sd = math.sqrt(max(0.0, stats["conf_sq"] / n - mean * mean))
            half = 1.96 * sd / math.sqrt(n)
            rows.append(_row(key, "confidence_mean", mean, n, (mean - half, mean + half)))
            ref_sum, ref_n = history.confidence.get(key, (0.0, 0.0))
            if ref_n:
                rows.append(_row(key, "confidence_ref", ref_sum / ref_n, ref_n))
                rows.append(_row(key, "confidence_drift", mean - ref_sum / ref_n, n))
        if stats.get("grammar_n"):
            rows.append(_row(key, "out_of_grammar_share", stats["oog"] / stats["grammar_n"], stats["grammar_n"]))
        complaints = voc.get(key, 0.0)
        if count or complaints:
            rows.append(_row(key, "voc_per_1k", 1000 * complaints / count if count else None, complaints))
        past = history.utterances.get(key, 0.0)
        if past:
            rows.append(_row(key, "voc_per_1k_ref", 1000 * history.voc.get(key, 0.0) / past,
                             history.voc.get(key, 0.0)))
        for name, profile in (reference.features.items() if reference is not None else ()):
            bins = stats.get(f"{name}:bins")
            if bins is None or not bins.sum():
                continue
            rows.append(_row(key, f"psi_{name}", psi(profile.shares, bins), bins.sum()))
            rows.append(_row(key, f"ks_{name}", ks_binned(profile.shares, bins), bins.sum()))
    return rows


# -- online WER/CER from the human-transcribed subset ----------------------------------------------------
@dataclass
class _Labeled:
    count: int
    counts: np.ndarray  # (n, 4) from edit_counts
    exact: np.ndarray  # (n,)
    groups: dict[Key, list[int]]


def _labeled(session: Session, start: datetime, end: datetime, config: DriftConfig) -> _Labeled:
    """Production utterances of the window whose audio has a reviewed transcript (the newest one when a
    recording was reviewed more than once), scored against the served hypothesis."""
    pu, lb = ProductionUtterance.__table__, Label.__table__
    query = (select(pu.c.request_id, *_slice_columns(pu), func.coalesce(pu.c.model_version, UNKNOWN),
                    pu.c.hypothesis, lb.c.text, lb.c.reviewed_at)
             .select_from(pu.join(lb, and_(lb.c.recording_id == pu.c.recording_id, lb.c.status == "reviewed")))
             .where(pu.c.created_at >= start, pu.c.created_at < end, pu.c.recording_id.is_not(None),
                    pu.c.hypothesis.is_not(None), lb.c.text.is_not(None)))
    newest: dict[str, tuple] = {}
    for r in session.execute(query):
        seen = newest.get(r[0])
        if seen is None or (r[8] is not None and (seen[8] is None or aware(r[8]) > aware(seen[8]))):
            newest[r[0]] = tuple(r)
    normalize = get_language_pack(config.language).normalize
    counts, exact, groups = [], [], defaultdict(list)
    for i, r in enumerate(newest[k] for k in sorted(newest)):
        ref, hyp = normalize(r[7]), normalize(r[6])
        counts.append(edit_counts(ref, hyp))
        exact.append(float(ref.replace(" ", "") == hyp.replace(" ", "")))
        for key in _targets(r[1:5], r[5]):
            groups[key].append(i)
    return _Labeled(len(counts), np.array(counts, dtype=float).reshape(-1, 4), np.array(exact), dict(groups))


def _labeled_rows(labeled: _Labeled, config: DriftConfig) -> list[dict]:
    rows = []
    for key in sorted(labeled.groups):
        ix = labeled.groups[key]
        m = metrics(labeled.counts[ix], labeled.exact[ix], draws=config.bootstrap_draws)
        rows += [_row(key, "wer", m.wer, m.n, m.wer_ci), _row(key, "cer", m.cer, m.n, m.cer_ci),
                 _row(key, "exact_match", m.exact_match, m.n, m.exact_match_ci)]
    return rows


def _baseline_rows(source: BaselineSource, keys: set[Key]) -> list[dict]:
    rows = []
    for key in sorted(keys):
        baseline = source(key[2])
        if baseline is None:
            continue
        for metric in ("wer", "cer"):
            found = baseline.get(metric, key[0], key[1])
            if found is not None:
                rows.append(_row(key, f"{metric}_baseline", found[0], found[1]))
    return rows


# -- writing ---------------------------------------------------------------------------------------------
UNIQUE = ("window_end", "window_s", "slice_key", "slice_value", "model_version", "metric")


def _replace(session: Session, end: datetime, window_s: int, owned: tuple[str, ...], rows: list[dict],
             now: datetime) -> int:
    """Upsert ``rows`` for (end, window_s) and delete the rows of ``owned`` metrics this run did not produce."""
    table = SliceMetric.__table__
    keep = {(r["slice_key"], r["slice_value"], r["model_version"], r["metric"]) for r in rows}
    existing = session.execute(
        select(table.c.id, table.c.slice_key, table.c.slice_value, table.c.model_version, table.c.metric)
        .where(table.c.window_end == end, table.c.window_s == window_s, table.c.metric.in_(owned))).all()
    stale = [r.id for r in existing if tuple(r[1:]) not in keep]
    if stale:
        session.execute(delete(table).where(table.c.id.in_(stale)))
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"the drift job supports sqlite and postgresql catalogs, not {dialect!r}")
    full = [{**r, "window_end": end, "window_s": window_s, "computed_at": now} for r in rows]
    if full:
        # One statement for all rows: SQLAlchemy batches the parameter sets ("insertmanyvalues").
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=list(UNIQUE), set_={
            c: stmt.excluded[c] for c in ("value", "ci_low", "ci_high", "n", "computed_at")})
        session.execute(stmt, full)
    return len(full)


def latest_window(session: Session, window_s: int) -> datetime | None:
    """The end of the newest computed window of this length, if any."""
    end = session.scalar(select(func.max(SliceMetric.window_end)).where(SliceMetric.window_s == window_s,
                                                                       SliceMetric.metric == "utterances"))
    return aware(end) if end is not None else None


