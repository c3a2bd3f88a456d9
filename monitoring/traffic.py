"""Traffic per hour — requests per model version, latency percentiles, problem counts — rolled up once.

Why a rollup: grouping a month of production utterances (a million rows) by hour takes seconds on SQLite
and ~0.5 s on PostgreSQL, whatever the indexes, because every row has to be read; the dashboard must
answer in ≤ 200 ms. An hour that has ended (plus :data:`GRACE` for requests still being written) never
changes, so its numbers are computed once — one ``GROUP BY (hour, model version, latency bin)`` in SQL —
and stored as :class:`~collection.models.SliceMetric` rows (``window_s`` 3600, slice ``all``/``all``,
metrics ``traffic_*``, see :data:`METRICS`); later reads fetch a few rows per hour. Hours still open are
computed live from the raw rows each time (at most an hour or two of traffic). The first request over a
long, never-seen range pays the one-time cost; the drift job or ``voiceloop report`` can pay it instead
(:func:`rollup_traffic`).

The same rollup keeps, per hour, the utterances served and the complaints that came in per slice value
(``traffic_utterances`` / ``traffic_voc`` rows with the slice's key and value; ``traffic_voc`` ``all`` for
every complaint): the VOC rate per 1,000 utterances over a month is then a read of a few thousand rows
(:func:`monitoring.voc_queries.voc_rate`), not a scan of a million.

Latency percentiles come from a histogram built in SQL (5 ms bins below 1 s, 100 ms bins up to 10 s,
interpolated within the bin), so they are exact to a few milliseconds. Percentiles do not add up: a bucket
longer than an hour shows its worst hour (the number an SLO cares about), never an average of percentiles
labelled as a percentile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Integer, and_, case, cast, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from collection.labeling import LOW_CONFIDENCE
from collection.models import Feedback, ProductionUtterance, SliceMetric, aware, utcnow
from monitoring.slices import ALL, SLICE_KEYS, UNKNOWN

HOUR = timedelta(hours=1)
GRACE = timedelta(minutes=5)  # an hour is final this long after it ends (requests in flight are written)
UNKNOWN_VERSION = "unknown"  # utterances stored without a model version
REQUESTS = "traffic_requests"
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
COUNTS = ("out_of_grammar", "low_confidence", "cut_at_max")
_LATENCY = {f"traffic_latency_{p}": p for p in PERCENTILES}
_COUNT = {f"traffic_{c}": c for c in COUNTS}
UTTERANCES = "traffic_utterances"  # per slice key and value (the whole traffic is REQUESTS)
VOC = "traffic_voc"  # complaints that came in during the hour, per slice key and value, and ``all``
METRICS = (REQUESTS, *_LATENCY, *_COUNT, VOC)  # what the overview reads (VOC ``all``: rolled up with slices)
ROLLUP_METRICS = (*METRICS, UTTERANCES)  # every metric the rollup writes (the drift views leave them out)
# latency histogram: 5 ms bins below 1 s (bins 0..199), 100 ms bins from 1 s (200..289), 10 s and more: 290
FINE_MS, FINE_BINS, COARSE_MS, LAST_BIN = 5.0, 200, 100.0, 290


@dataclass
class TrafficBucket:
    """Served requests in [start, start + an hour or more). Latencies in ms (None without any; a bucket of
    several hours keeps its worst hour's); counts of utterances that did not parse to a command, had a
    confidence below :data:`collection.labeling.LOW_CONFIDENCE`, or were cut at the stream's maximum length."""

    start: datetime
    requests: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    latency_n: int = 0
    out_of_grammar: int = 0
    low_confidence: int = 0
    cut_at_max: int = 0
    voc: int = 0  # complaints that came in
    # (slice key, slice value) -> [utterances, complaints]; read only when a slice key is asked for
    by_slice: dict[tuple[str, str], list[int]] = field(default_factory=dict, metadata={"json": False})

    def add(self, other: TrafficBucket) -> None:
        """Fold another (an hour inside this bucket) into this one."""
        self.requests += other.requests
        for version, n in other.by_version.items():
            self.by_version[version] = self.by_version.get(version, 0) + n
        self.p50, self.p95, self.p99 = (_worst(self.p50, other.p50), _worst(self.p95, other.p95),
                                        _worst(self.p99, other.p99))
        self.latency_n += other.latency_n
        self.out_of_grammar += other.out_of_grammar
        self.low_confidence += other.low_confidence
        self.cut_at_max += other.cut_at_max
        self.voc += other.voc
        for key, (n, voc) in other.by_slice.items():
            counts = self.by_slice.setdefault(key, [0, 0])
            counts[0], counts[1] = counts[0] + n, counts[1] + voc


def _worst(a: float | None, b: float | None) -> float | None:
    return b if a is None else (a if b is None else max(a, b))


def floor_hour(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return t.replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    floored = floor_hour(t)
    return floored if floored == t.astimezone(UTC) else floored + HOUR


def _floor_div(expr, width: float, dialect: str):  # noqa: ANN001, ANN202 - SQL expressions
    # CAST truncates on SQLite but rounds on PostgreSQL; latencies are never negative.
    return cast(expr / width, Integer) if dialect == "sqlite" else cast(func.floor(expr / width), Integer)


def _latency_bin(dialect: str):  # noqa: ANN202
    lat = ProductionUtterance.latency_ms
    coarse = FINE_BINS + _floor_div(lat - 1000.0, COARSE_MS, dialect)
    return case((lat < 1000.0, _floor_div(lat, FINE_MS, dialect)), (lat >= 10000.0, LAST_BIN), else_=coarse)


def _hour_of(dialect: str, column=ProductionUtterance.created_at):  # noqa: ANN001, ANN202
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
        return func.substr(column, 1, 13)
    if dialect == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", column))
    raise ValueError(f"traffic rollups support sqlite and postgresql, not {dialect!r}")


def _parse_hour(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)
    text = str(value)
    return datetime.strptime(f"{text[:10]} {text[11:13]}", "%Y-%m-%d %H").replace(tzinfo=UTC)


def _bin_range(b: int) -> tuple[float, float]:
    if b < FINE_BINS:
        return b * FINE_MS, (b + 1) * FINE_MS
    if b >= LAST_BIN:
        return 10000.0, 10000.0
    low = 1000.0 + (b - FINE_BINS) * COARSE_MS
    return low, low + COARSE_MS


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a latency histogram (bin → count), interpolated within its bin, in ms."""
    n = sum(histogram.values())
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for b in sorted(histogram):
        c = histogram[b]
        if seen + c >= rank:
            low, high = _bin_range(b)
            return round(low + (high - low) * ((rank - seen) / c), 1)
        seen += c
    return _bin_range(max(histogram))[1]


def aggregate_hours(session: Session, start: datetime, end: datetime) -> dict[datetime, TrafficBucket]:
    """Hours in [start, end) (hour-aligned) computed from the raw utterances: one GROUP BY in SQL."""
    dialect = session.get_bind().dialect.name
    pu = ProductionUtterance
    hour, lat_bin = _hour_of(dialect).label("hour"), _latency_bin(dialect).label("bin")
    stmt = (select(hour, pu.model_version, lat_bin, func.count(), func.count(pu.latency_ms),
                   func.sum(case((pu.in_grammar.is_(False), 1), else_=0)),
                   func.sum(case((pu.confidence < LOW_CONFIDENCE, 1), else_=0)),
                   func.sum(case((pu.ended_by == "max_seconds", 1), else_=0)))
            .where(pu.created_at >= start, pu.created_at < end)
            .group_by(hour, pu.model_version, lat_bin))
    hours: dict[datetime, TrafficBucket] = {}
    histograms: dict[datetime, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for h, version, b, n, n_lat, oog, low, cut in session.execute(stmt):
        start_h = _parse_hour(h)
        ht = hours.setdefault(start_h, TrafficBucket(start_h))
        version = version or UNKNOWN_VERSION
        ht.requests += n
        ht.by_version[version] = ht.by_version.get(version, 0) + n
        ht.latency_n += n_lat
        ht.out_of_grammar += int(oog or 0)
        ht.low_confidence += int(low or 0)
        ht.cut_at_max += int(cut or 0)
        if b is not None and n_lat:
            histograms[start_h][int(b)] += n_lat
    for start_h, ht in hours.items():
        for name, q in PERCENTILES.items():
            setattr(ht, name, percentile(histograms[start_h], q))
    for index, model in enumerate((ProductionUtterance, Feedback)):  # one GROUP BY each, every slice key at once
        hour = _hour_of(dialect, model.created_at).label("hour")
        columns = [getattr(model, k) for k in SLICE_KEYS]
        stmt = (select(hour, *columns, func.count()).where(model.created_at >= start, model.created_at < end)
                .group_by(hour, *columns))
        for h, *values, n in session.execute(stmt):
            start_h = _parse_hour(h)
            ht = hours.get(start_h) or hours.setdefault(start_h, TrafficBucket(start_h))
            if index:
                ht.voc += n
            for key, value in zip(SLICE_KEYS, values, strict=True):
                counts = ht.by_slice.setdefault((key, value or UNKNOWN), [0, 0])
                counts[index] += n
    return hours


def _rows(ht: TrafficBucket, now: datetime) -> list[dict[str, object]]:
    base = {"window_end": ht.start + HOUR, "window_s": int(HOUR.total_seconds()), "slice_key": "all",
            "slice_value": "all", "ci_low": None, "ci_high": None, "computed_at": now}
    rows = [{**base, "model_version": "", "metric": REQUESTS, "value": float(ht.requests), "n": ht.requests}]
    rows += [{**base, "model_version": v, "metric": REQUESTS, "value": float(n), "n": n}
             for v, n in ht.by_version.items()]
    if ht.requests:
        rows += [{**base, "model_version": "", "metric": f"traffic_latency_{p}", "value": getattr(ht, p),
                  "n": ht.latency_n} for p in PERCENTILES if getattr(ht, p) is not None]
        rows += [{**base, "model_version": "", "metric": f"traffic_{c}", "value": float(getattr(ht, c)),
                  "n": ht.requests} for c in COUNTS]
    # written even when 0: with REQUESTS it marks the hour as rolled up, slices included
    rows.append({**base, "model_version": "", "metric": VOC, "value": float(ht.voc), "n": ht.voc})
    for (key, value), (n, voc) in ht.by_slice.items():
        sliced = {**base, "slice_key": key, "slice_value": value, "model_version": ""}
        rows += [{**sliced, "metric": metric, "value": float(count), "n": count}
                 for metric, count in ((UTTERANCES, n), (VOC, voc)) if count]
    return rows


def _upsert(session: Session, rows: Sequence[dict[str, object]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    stmt = insert(SliceMetric)
    stmt = stmt.on_conflict_do_update(
        index_elements=["window_end", "window_s", "slice_key", "slice_value", "model_version", "metric"],
        set_={"value": stmt.excluded.value, "n": stmt.excluded.n, "computed_at": stmt.excluded.computed_at})
    for i in range(0, len(rows), 2000):
        session.execute(stmt, list(rows[i:i + 2000]))


def _stored(session: Session, start: datetime, end: datetime,
            slice_key: str | None = None) -> dict[datetime, TrafficBucket]:
    """The rolled-up hours in [start, end); with ``slice_key``, their counts per value of that key too."""
    sm = SliceMetric.__table__.c  # Core, not ORM: thousands of small rows
    which = and_(sm.metric.in_(METRICS), sm.slice_key == ALL, sm.slice_value == ALL)
    if slice_key is not None and slice_key != ALL:
        which = or_(which, and_(sm.metric.in_((UTTERANCES, VOC)), sm.slice_key == slice_key))
    stmt = (select(sm.window_end, sm.model_version, sm.metric, sm.value, sm.n, sm.slice_key, sm.slice_value)
            .where(which, sm.window_end > start, sm.window_end <= end, sm.window_s == int(HOUR.total_seconds())))
    hours: dict[datetime, TrafficBucket] = {}
    complete: set[datetime] = set()
    rolled: set[datetime] = set()  # hours whose slices were rolled up too (older rollups had none)
    starts: dict[datetime, datetime] = {}  # a few rows per hour share one window_end: convert it once
    for window_end, version, metric, value, n, key, slice_value in session.connection().execute(stmt):
        start_h = starts.get(window_end)
        if start_h is None:
            start_h = starts[window_end] = aware(window_end).astimezone(UTC) - HOUR
        ht = hours.get(start_h) or hours.setdefault(start_h, TrafficBucket(start_h))
        if key != ALL:
            ht.by_slice.setdefault((key, slice_value), [0, 0])[metric == VOC] = int(n)
        elif metric == VOC:
            ht.voc = int(n)
            rolled.add(start_h)
        elif metric == REQUESTS:
            if version:
                ht.by_version[version] = int(n)
            else:
                ht.requests = int(n)
                complete.add(start_h)  # written with the others, even when 0: the hour is rolled up
        elif metric in _LATENCY:
            setattr(ht, _LATENCY[metric], value)
            ht.latency_n = int(n)
        else:
            setattr(ht, _COUNT[metric], int(value or 0))
    return {h: ht for h, ht in hours.items() if h in complete and h in rolled}


def _spans(hours: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Contiguous [start, end) spans covering the given hour starts (sorted)."""
    spans: list[tuple[datetime, datetime]] = []
    for h in sorted(hours):
        if spans and spans[-1][1] == h:
            spans[-1] = (spans[-1][0], h + HOUR)
        else:
            spans.append((h, h + HOUR))
    return spans


def rollup_traffic(session: Session, since: datetime, until: datetime, *, now: datetime | None = None,
                   recompute: bool = False) -> int:
    """Store the rollups of every closed hour in [since, until) that has none yet (all of them with
    ``recompute``); returns how many hours were computed. Idempotent (upserts). Does not commit."""
    now = now or utcnow()
    start, end = floor_hour(since), min(ceil_hour(until), _last_closed_end(now))
    if end <= start:
        return 0
    have = {} if recompute else _stored(session, start, end)
    return len(_fill(session, have, start, end, now))


def _fill(session: Session, have: dict[datetime, TrafficBucket], start: datetime, end: datetime,
          now: datetime) -> dict[datetime, TrafficBucket]:
    """Compute and store the hours of [start, end) missing from ``have``; returns them."""
    missing = [h for h in _hour_starts(start, end) if h not in have]
    done: dict[datetime, TrafficBucket] = {}
    for span_start, span_end in _spans(missing):
        computed = aggregate_hours(session, span_start, span_end)
        hours = [computed.get(h, TrafficBucket(h)) for h in _hour_starts(span_start, span_end)]
        _upsert(session, [r for ht in hours for r in _rows(ht, now)])
        done.update((ht.start, ht) for ht in hours)
    return done


def _last_closed_end(now: datetime) -> datetime:
    """The end of the last hour that is final at ``now`` (hours ending at or before it never change)."""
    return floor_hour(now - GRACE)


def _hour_starts(start: datetime, end: datetime) -> list[datetime]:
    out, h = [], start
    while h < end:
        out.append(h)
        h += HOUR
    return out


def hourly_traffic(session: Session, since: datetime, until: datetime, *, now: datetime | None = None,
                   slice_key: str | None = None) -> list[TrafficBucket]:
    """Every hour from ``floor_hour(since)`` to ``ceil_hour(until)``, in order: closed hours from the
    rollups (computing and storing those missing — the caller commits), open hours live. ``by_slice`` holds
    the counts per value of ``slice_key`` when one is given (of every key for hours computed now)."""
    now = now or utcnow()
    start, end = floor_hour(since), ceil_hour(until)
    closed_end = max(start, min(end, _last_closed_end(now)))
    hours = _stored(session, start, closed_end, slice_key) if closed_end > start else {}
    hours.update(_fill(session, hours, start, closed_end, now))
    if closed_end < end:
        hours.update(aggregate_hours(session, closed_end, end))
    return [hours.get(h, TrafficBucket(h)) for h in _hour_starts(start, end)]
