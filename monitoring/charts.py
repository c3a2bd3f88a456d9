"""The dashboard's charts: :mod:`monitoring.dashboard` results drawn with :mod:`monitoring.plots`.

One function per page section, shared by the pages and the HTML report so both show the same pictures.
Each returns ``(title, svg)`` pairs; the SVG escapes every label itself.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from monitoring.dashboard import Drift, Overview
from monitoring.plots import Bar, Marker, Point, Series, bars_svg, stacked_bars_svg, time_series_svg

# metrics stored as fractions (shown in percent)
PERCENT_METRICS = {"wer", "cer", "ser", "command_error", "out_of_grammar_rate", "low_confidence_rate"}
SLICE_ORDER = ("all", "dialect", "age_band", "environment", "device_type")


def overview_charts(ov: Overview) -> list[tuple[str, str]]:
    """Traffic per bucket stacked by model version (the version timeline), latency percentiles, problems."""
    starts = [b.start for b in ov.buckets]
    versions = [v.model_version for v in ov.versions]
    stacks = {v: [b.by_version.get(v, 0) for b in ov.buckets] for v in versions}
    bucket = timedelta(seconds=ov.bucket_s)
    latency = [Series(p, [Point(b.start, getattr(b, p)) for b in ov.buckets]) for p in ("p50", "p95", "p99")]
    problems = [Series(name.replace("_", " "), [Point(b.start, float(getattr(b, name))) for b in ov.buckets])
                for name in ("out_of_grammar", "low_confidence", "cut_at_max")]
    hours = ov.bucket_s // 3600
    per = "hour" if hours == 1 else f"{hours} h"
    return [
        (f"Requests per {per}, by model version", stacked_bars_svg(starts, stacks, bucket=bucket,
                                                                     title=f"Requests per {per}, by model version")),
        ("Latency (ms)", time_series_svg(latency, title=f"Latency, ms ({'hourly' if hours == 1 else 'worst hour'})",
                                         since=ov.since, until=ov.until, y_label="milliseconds")),
        ("Problems", time_series_svg(problems, title=f"Problem utterances per {per}", since=ov.since,
                                     until=ov.until)),
    ]


def _metric_label(metric: str) -> str:
    return metric.upper() if metric in ("wer", "cer") else metric.replace("_", " ")


def drift_charts(d: Drift) -> list[tuple[str, str]]:
    """One chart per slice key: a line and confidence band per slice value, alert markers on it."""
    percent = d.metric in PERCENT_METRICS
    keys = sorted({s.slice_key for s in d.series} | {a.slice_key for a in d.alerts if a.metric == d.metric},
                  key=lambda k: (SLICE_ORDER.index(k) if k in SLICE_ORDER else len(SLICE_ORDER), k))
    out = []
    for key in keys:
        series = [Series(s.slice_value if key != "all" else "all traffic",
                         [Point(p.window_end, p.value, p.ci_low, p.ci_high) for p in s.points])
                  for s in d.series if s.slice_key == key]
        markers = [Marker(a.window_end, a.value, f"{a.kind}: {a.slice_key}={a.slice_value} {a.metric} "
                                                 f"{_num(a.value, percent)} vs baseline {_num(a.baseline, percent)} "
                                                 f"({a.status})")
                   for a in d.alerts if a.slice_key == key and a.metric == d.metric]
        title = f"{_metric_label(d.metric)} by {key.replace('_', ' ')}" if key != "all" else \
            f"{_metric_label(d.metric)}, all traffic"
        out.append((title, time_series_svg(series, title=title, markers=markers, percent=percent, since=d.since,
                                           until=d.until)))
    return out


def comparison_chart(d: Drift) -> str | None:
    """Each model version's latest value per slice (champion vs challenger), with confidence intervals."""
    if not d.comparison:
        return None
    percent = d.metric in PERCENT_METRICS
    rows: dict[str, list] = {}
    for c in d.comparison:
        name = f"{c.model_version} ({c.role})" if c.role else c.model_version
        rows.setdefault(f"{c.slice_key}={c.slice_value}" if c.slice_key != "all" else "all", []).append(
            (name, c.value, c.ci_low, c.ci_high))
    order = sorted(rows, key=lambda r: (r != "all", r))
    return bars_svg([Bar(label, rows[label]) for label in order], percent=percent,
                    title=f"{_metric_label(d.metric)} per slice and model version (latest window)")


def data_charts(by_axis: list) -> list[tuple[str, str]]:  # noqa: ANN001 - dashboard.AxisRow
    """Per plan axis: collected and labeled as a share of target (a dashed line marks 100 %)."""
    out = []
    for axis in dict.fromkeys(r.axis for r in by_axis):
        rows = [Bar(r.value, [("collected", r.collected / r.target if r.target else 0.0, None, None),
                              ("labeled", r.labeled / r.target if r.target else 0.0, None, None)])
                for r in by_axis if r.axis == axis]
        title = f"Quota fill by {axis.replace('_', ' ')}"
        out.append((title, bars_svg(rows, title=title, percent=True, x_max=1.0, target=1.0)))
    return out


def _num(v: float | None, percent: bool) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if percent else f"{v:.3g}"


def release_chart(row: Any) -> str | None:  # noqa: ANN401 - dashboard.ReleaseRow
    """A judged release step: CER per slice, champion vs challenger, with the change's interval in the label."""
    if not row.slices and not row.overall:
        return None
    deltas = ([row.overall] if row.overall else []) + row.slices
    bars = []
    for d in deltas:
        name = "overall" if d["key"] == "all" else f"{d['key']}={d['value']}"
        mark = " ✗" if d.get("regressed") else ("" if d.get("judged", True) else " (few)")
        bars.append(Bar(f"{name}{mark}", [(f"champion {row.champion_version or ''}".strip(), d["champion"], None, None),
                                          (f"challenger {row.model_version or ''}".strip(), d["challenger"], None,
                                           None)]))
    return bars_svg(bars, percent=True, title=f"CER per slice at the {row.stage} step ({row.verdict})")
