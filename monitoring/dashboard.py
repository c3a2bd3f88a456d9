"""What the ops dashboard and the HTML report show: overview, drift, data quotas and the VOC inbox.

Every function takes the caller's session and a :class:`TimeRange` (or filters) and returns plain
dataclasses (:func:`jsonable` turns them into JSON for ``/ops/api/…``). All aggregation happens in SQL
(``GROUP BY``), so the pages stay fast with a million production utterances and ten thousand complaints:

- :func:`overview`: traffic per time bucket and per model version, latency percentiles, problem counts,
  from the hourly rollups of :mod:`monitoring.traffic` (the only function here that writes: it stores the
  rollups of closed hours it had to compute; the caller commits);
- :func:`drift`: per-slice online WER/CER (whatever the drift job stored in ``slice_metrics``) with
  confidence intervals, alerts, and each model version's latest value per slice (champion vs challenger);
- :func:`data_status`: a data plan's quotas against what was collected and labeled (:mod:`collection.quota`);
- :func:`monitoring.voc_queries.list_feedback`: the VOC inbox (filters, linked utterances, reference vs
  hypothesis).

Errors are :class:`monitoring.timerange.MonitoringError` with a ``code`` the routes map to an HTTP status;
time ranges are :class:`monitoring.timerange.TimeRange`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from collection.dataplan import AXES, DataPlan
from collection.models import Alert, ProductionUtterance, Rejection, ShadowResult, SliceMetric, aware
from collection.quota import CellStatus, plan_status, totals
from monitoring import metrics
from monitoring.timerange import MonitoringError, TimeRange
from monitoring.traffic import HOUR, TrafficBucket, ceil_hour, floor_hour, hourly_traffic
from monitoring.traffic import ROLLUP_METRICS as TRAFFIC_METRICS

# bucket sizes for the overview, smallest first: the first giving at most MAX_BUCKETS buckets is used
BUCKETS = (HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR, 7 * 24 * HOUR)
MAX_BUCKETS = 72
METRIC_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
DRIFT_SLICE_KEYS = ("all", "dialect", "age_band", "environment", "device_type")
PREFERRED_METRICS = ("wer", "cer")
MAX_ROWS = 500  # rows one dashboard query returns at most (alerts, release steps)
MAX_POINTS = 120  # windows per drift series: a chart 720 px wide shows no more


def choose_bucket(rng: TimeRange) -> timedelta:
    """The smallest of :data:`BUCKETS` that draws the range in at most :data:`MAX_BUCKETS` buckets."""
    span = ceil_hour(rng.until) - floor_hour(rng.since)
    return next((b for b in BUCKETS if span / b <= MAX_BUCKETS), BUCKETS[-1])


# -- overview --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionSpan:
    """A model version's share of the range: its first and last hour with traffic, and its requests."""

    model_version: str
    first_seen: datetime
    last_seen: datetime
    requests: int


@dataclass(frozen=True)
class Overview:
    since: datetime
    until: datetime
    bucket_s: int
    requests: int
    # latency in ms: request-weighted mean of the hourly percentiles ("a typical hour") and the worst hour
    latency_ms: dict[str, float | None]
    problems: dict[str, int]  # out_of_grammar / low_confidence / cut_at_max over the range
    buckets: list[TrafficBucket]
    versions: list[VersionSpan]
    rejections: dict[str, int]  # production audio QC refused (stored in the catalog), by reason
    process_errors: dict[str, dict[str, float]]  # this server process since it started (Prometheus counters)
    available: str = ("Refused requests (4xx/5xx, rate limits, bad audio) are Prometheus counters, not catalog "
                      "rows: the numbers below count this server process since it started; fleet-wide figures "
                      "come from Prometheus/Grafana (infra/).")


def _bucket_of(t: datetime, bucket: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((t - epoch) // bucket) * bucket


def _weighted(hours: Sequence[TrafficBucket], name: str) -> float | None:
    pairs = [(getattr(h, name), h.latency_n) for h in hours if getattr(h, name) is not None and h.latency_n]
    total = sum(n for _, n in pairs)
    return round(sum(v * n for v, n in pairs) / total, 1) if total else None


def overview(session: Session, rng: TimeRange, *, bucket: timedelta | None = None,
             now: datetime | None = None) -> Overview:
    """Traffic, latency and problems over ``rng`` in hour-aligned buckets (stores missing rollups)."""
    bucket = bucket or choose_bucket(rng)
    hours = hourly_traffic(session, rng.since, rng.until, now=now)
    buckets: dict[datetime, TrafficBucket] = {}
    for h in hours:
        start = _bucket_of(h.start, bucket)
        buckets.setdefault(start, TrafficBucket(start)).add(h)
    spans: dict[str, list[Any]] = {}
    for h in hours:
        for v, n in h.by_version.items():
            if n:
                span = spans.setdefault(v, [h.start, h.start + HOUR, 0])
                span[1], span[2] = h.start + HOUR, span[2] + n
    latency = {p: _weighted(hours, p) for p in ("p50", "p95", "p99")}
    latency.update({"worst_hour_p95": max((h.p95 for h in hours if h.p95 is not None), default=None),
                    "worst_hour_p99": max((h.p99 for h in hours if h.p99 is not None), default=None)})
    return Overview(
        since=rng.since, until=rng.until, bucket_s=int(bucket.total_seconds()),
        requests=sum(h.requests for h in hours), latency_ms=latency,
        problems={c: sum(getattr(h, c) for h in hours) for c in ("out_of_grammar", "low_confidence", "cut_at_max")},
        buckets=[buckets[k] for k in sorted(buckets)],
        versions=sorted((VersionSpan(v, s[0], s[1], s[2]) for v, s in spans.items()),
                        key=lambda s: (s.first_seen, s.model_version)),
        rejections=production_rejections(session, rng), process_errors=process_errors())


def production_rejections(session: Session, rng: TimeRange) -> dict[str, int]:
    """Production audio that QC refused to store, by reason (the request itself was still answered)."""
    stmt = (select(Rejection.reason, func.count()).where(Rejection.source == "production",
                                                         Rejection.created_at >= rng.since,
                                                         Rejection.created_at < rng.until)
            .group_by(Rejection.reason))
    return {reason: n for reason, n in session.execute(stmt)}


def process_errors() -> dict[str, dict[str, float]]:
    """This process's counters: HTTP answers by status class and route, refused audio by reason, rate limits
    and failed device authentications (Prometheus keeps the fleet's history)."""
    out: dict[str, dict[str, float]] = {"http_status": {}, "input_rejected": {}, "other": {}}
    for sample in _samples(metrics.HTTP_REQUESTS):
        status = sample.labels.get("status", "")
        if status[:1] in ("4", "5"):
            key = f"{status} {sample.labels.get('route', '')}"
            out["http_status"][key] = out["http_status"].get(key, 0) + sample.value
    for sample in _samples(metrics.INPUT_REJECTED):
        key = sample.labels.get("reason", "")
        out["input_rejected"][key] = out["input_rejected"].get(key, 0) + sample.value
    for name, counter in (("rate_limited", metrics.RATE_LIMITED), ("auth_failures", metrics.AUTH_FAILURES)):
        out["other"][name] = sum(s.value for s in _samples(counter))
    return out


def _samples(counter: Any) -> list[Any]:  # noqa: ANN401 - a prometheus_client Counter
    return [s for m in counter.collect() for s in m.samples if s.name.endswith("_total")]


# -- drift ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricPoint:
    window_end: datetime
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class SliceSeries:
    slice_key: str
    slice_value: str
    points: list[MetricPoint]


@dataclass(frozen=True)
class AlertRow:
    id: str
    kind: str
    slice_key: str
    slice_value: str
    metric: str
    value: float | None
    baseline: float | None
    threshold: float | None
    window_end: datetime
    model_version: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class VersionValue:
    """A model version's latest value of the metric for one slice in the range."""

    slice_key: str
    slice_value: str
    model_version: str
    role: str  # champion / challenger / "" (an older version)
    window_end: datetime
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class Drift:
    since: datetime
    until: datetime
    metric: str
    window_s: int | None
    slice_key: str | None
    available: dict[str, list[int]]  # metric -> window sizes (s) stored in the range
    series: list[SliceSeries]
    alerts: list[AlertRow]
    versions: dict[str, str]  # champion / challenger -> model version
    comparison: list[VersionValue]


def _in_range(column: Any, rng: TimeRange):  # noqa: ANN401, ANN202
    return and_(column > rng.since, column <= rng.until)


def _recent(session: Session, rng: TimeRange) -> TimeRange | None:
    """The last day of stored drift windows in the range (None without any): what is computed now
    decides what the menus offer, and reading one day keeps that cheap over months of rows."""
    last = session.scalar(select(func.max(SliceMetric.window_end)).where(_in_range(SliceMetric.window_end, rng)))
    if last is None:
        return None
    last = aware(last).astimezone(UTC)
    return TimeRange(max(rng.since, last - timedelta(days=1)), last)


def available_metrics(session: Session, rng: TimeRange) -> dict[str, list[int]]:
    """metric → window sizes (seconds) the drift job stored in the last day of windows in the range."""
    recent = _recent(session, rng)
    if recent is None:
        return {}
    sm = SliceMetric
    stmt = (select(sm.metric, sm.window_s).where(_in_range(sm.window_end, recent), sm.metric.not_in(TRAFFIC_METRICS))
            .group_by(sm.metric, sm.window_s).order_by(sm.metric, sm.window_s))
    out: dict[str, list[int]] = {}
    for metric, window_s in session.execute(stmt):
        out.setdefault(metric, []).append(int(window_s))
    return out


def serving_versions(session: Session, until: datetime) -> dict[str, str]:
    """champion → the version that answered the latest request (not on the canary share) before ``until``;
    challenger → the latest shadowed version, else the latest canary version of the last day."""
    pu = ProductionUtterance
    out: dict[str, str] = {}
    champion = session.scalar(select(pu.model_version).where(pu.created_at <= until,
                                                             or_(pu.route.is_(None), pu.route == "champion"))
                              .order_by(pu.created_at.desc()).limit(1))
    if champion:
        out["champion"] = champion
    challenger = session.scalar(select(ShadowResult.model_version).where(ShadowResult.created_at <= until)
                                .order_by(ShadowResult.id.desc()).limit(1))
    if challenger is None:
        challenger = session.scalar(select(pu.model_version).where(pu.created_at <= until,
                                                                   pu.created_at > until - timedelta(days=1),
                                                                   pu.route == "challenger")
                                    .order_by(pu.created_at.desc()).limit(1))
    if challenger and challenger != champion:
        out["challenger"] = challenger
    return out


def drift(session: Session, rng: TimeRange, *, metric: str | None = None, slice_key: str | None = None,
          window_s: int | None = None) -> Drift:
    """Per-slice values of ``metric`` (default wer, else cer, else the first stored) for windows ending in
    ``rng`` (all versions together), the alerts of the range, and every version's latest value per slice.
    ``slice_key``: one of :data:`DRIFT_SLICE_KEYS` (default all); ``window_s``: default the most used."""
    if metric is not None and not METRIC_NAME.match(metric):
        raise MonitoringError("invalid", f"metric {metric!r}: lower-case letters, digits and '_' (e.g. wer, cer)")
    if slice_key is not None and slice_key not in DRIFT_SLICE_KEYS:
        raise MonitoringError("invalid", f"unknown slice key {slice_key!r}; valid: {list(DRIFT_SLICE_KEYS)}")
    available = available_metrics(session, rng)
    metric = metric or next((m for m in PREFERRED_METRICS if m in available), next(iter(available), "wer"))
    windows = available.get(metric, [])
    if window_s is not None and window_s <= 0:
        raise MonitoringError("invalid", f"window_s must be a positive number of seconds, got {window_s}")
    window_s = window_s or (_most_used_window(session, rng, metric) if windows else None)
    sm = SliceMetric
    where = [sm.metric == metric, sm.window_s == window_s, _in_range(sm.window_end, rng)]
    if slice_key is not None:
        where.append(sm.slice_key.in_({slice_key, "all"}))
    series: dict[tuple[str, str], list[MetricPoint]] = {}
    if window_s is not None:
        ends = _thinned_ends(session, where)
        stmt = (select(sm.slice_key, sm.slice_value, sm.window_end, sm.value, sm.ci_low, sm.ci_high, sm.n)
                .where(*where, sm.model_version == "", sm.window_end.in_(ends))
                .order_by(sm.slice_key, sm.slice_value, sm.window_end))
        for key, value, end, v, lo, hi, n in session.connection().execute(stmt):
            series.setdefault((key, value), []).append(MetricPoint(aware(end), v, lo, hi, n))
    versions = serving_versions(session, rng.until)
    return Drift(since=rng.since, until=rng.until, metric=metric, window_s=window_s, slice_key=slice_key,
                 available=available, series=[SliceSeries(k, v, p) for (k, v), p in series.items()],
                 alerts=alerts_in(session, rng, slice_key=slice_key), versions=versions,
                 comparison=_latest_per_version(session, where, versions) if window_s is not None else [])


def _thinned_ends(session: Session, where: list[Any]) -> list[datetime]:
    """The window ends of the series, at most :data:`MAX_POINTS` evenly spaced ones, always the newest:
    a drift job writing hourly 7-day windows stores 720 ends a month, and neighbours barely differ."""
    sm = SliceMetric
    ends = list(session.scalars(select(sm.window_end).where(*where, sm.model_version == "").distinct()
                                .order_by(sm.window_end)))
    step = -(-len(ends) // MAX_POINTS)
    return ends[::-1][::step][::-1] if step > 1 else ends


def _most_used_window(session: Session, rng: TimeRange, metric: str) -> int | None:
    recent = _recent(session, rng) or rng
    sm = SliceMetric
    stmt = (select(sm.window_s).where(sm.metric == metric, _in_range(sm.window_end, recent))
            .group_by(sm.window_s).order_by(func.count().desc(), sm.window_s).limit(1))
    return session.scalar(stmt)


def _latest_per_version(session: Session, where: list[Any], roles: dict[str, str]) -> list[VersionValue]:
    """Each version's values at its latest window end in the range (the drift job writes every slice of a
    window at once, so one end per version holds all its slices)."""
    sm = SliceMetric
    ends = session.execute(select(sm.model_version, func.max(sm.window_end)).where(*where, sm.model_version != "")
                           .group_by(sm.model_version)).all()
    role_of = {v: r for r, v in roles.items()}
    out = []
    for version, end in ends:
        stmt = (select(sm.slice_key, sm.slice_value, sm.window_end, sm.value, sm.ci_low, sm.ci_high, sm.n)
                .where(*where, sm.model_version == version, sm.window_end == end))
        out += [VersionValue(k, v, version, role_of.get(version, ""), aware(e), val, lo, hi, n)
                for k, v, e, val, lo, hi, n in session.connection().execute(stmt)]
    return sorted(out, key=lambda c: (c.slice_key, c.slice_value, c.model_version))


def alerts_in(session: Session, rng: TimeRange, *, slice_key: str | None = None,
              limit: int = MAX_ROWS) -> list[AlertRow]:
    """Alerts whose window ends in the range (newest first), open and resolved."""
    stmt = select(Alert).where(_in_range(Alert.window_end, rng))
    if slice_key is not None:
        stmt = stmt.where(Alert.slice_key.in_({slice_key, "all"}))
    rows = session.scalars(stmt.order_by(Alert.window_end.desc(), Alert.id).limit(limit))
    return [AlertRow(a.id, a.kind, a.slice_key, a.slice_value, a.metric, a.value, a.baseline, a.threshold,
                     aware(a.window_end), a.model_version, a.status, aware(a.created_at)) for a in rows]


# -- data plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AxisRow:
    """One value of one plan axis, summed over its cells (collected/labeled capped at each cell's target)."""

    axis: str
    value: str
    target: int
    collected: int
    labeled: int


@dataclass(frozen=True)
class DataStatus:
    plan: str
    target: int
    collected: int
    labeled: int
    cells: list[dict[str, Any]]
    by_axis: list[AxisRow]


def data_status(session: Session, plan: DataPlan) -> DataStatus:
    """The plan's quota cells (as ``voiceloop plan status`` shows them) and per-axis sums."""
    statuses: list[CellStatus] = plan_status(session, plan)
    target, collected, labeled = totals(statuses)
    by_axis: dict[tuple[str, str], list[int]] = {}
    for s in statuses:
        for axis in AXES:
            row = by_axis.setdefault((axis, getattr(s.cell, axis)), [0, 0, 0])
            row[0] += s.target
            row[1] += min(s.collected, s.target)
            row[2] += min(s.labeled, s.target)
    cells = [{**dict(zip(AXES, s.cell.axes, strict=True)), "target": s.target, "collected": s.collected,
              "labeled": s.labeled, "remaining": s.remaining, "fill": round(s.fill, 4)} for s in statuses]
    return DataStatus(plan.name, target, collected, labeled, cells,
                      [AxisRow(a, v, *row) for (a, v), row in by_axis.items()])


# -- releases --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseRow:
    """One step of a release (collection.models.ReleaseDecision): offline gate, shadow, canary, promotion
    or rollback; ``slices``: the gate's per-slice CER, champion vs challenger, when the step was judged."""

    at: datetime
    stage: str
    verdict: str
    model_version: str | None
    champion_version: str | None
    summary: str
    reasons: list[str]
    run_key: str
    overall: dict[str, Any] | None
    slices: list[dict[str, Any]]


def releases(session: Session, model_name: str, *, limit: int = 50) -> list[ReleaseRow]:
    """The newest release steps of ``model_name``, newest first."""
    from collection.releases import release_history

    if not 1 <= limit <= MAX_ROWS:
        raise MonitoringError("invalid", f"limit must be 1-{MAX_ROWS}, got {limit}")
    return [ReleaseRow(aware(r.created_at), r.stage, r.verdict, r.model_version, r.champion_version, r.summary,
                       list(r.reasons or []), r.run_key, (r.numbers or {}).get("overall"),
                       list((r.numbers or {}).get("slices") or []))
            for r in release_history(session, model_name, limit=limit)]


# -- JSON ------------------------------------------------------------------------------------------
def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def jsonable(obj: Any) -> Any:  # noqa: ANN401
    """Dataclasses, datetimes, dicts and lists as JSON-ready values (times in ISO 8601 UTC). A drift
    point is a list ``[window_end, value, ci_low, ci_high, n]`` (thousands of them: compact and fast)."""
    if isinstance(obj, MetricPoint):
        return [_iso(obj.window_end), obj.value, obj.ci_low, obj.ci_high, obj.n]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.metadata.get("json", True)}
    if isinstance(obj, datetime):
        return _iso(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj
