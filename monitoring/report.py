"""The monitoring report: one self-contained HTML file with the dashboard's numbers and plots for a range.

    html = build_report(session, TimeRange.parse("7d"), plan=load_dataplan("demo"))

Self-contained means it opens anywhere, offline, and can be mailed: the CSS is inlined, the charts are
inline SVG (:mod:`monitoring.charts`, the same pictures as the pages, from the same ``_ops.html`` macros),
and nothing refers to a URL — no scripts, no fonts, no images to fetch. Complaint text and transcripts
are user input and are escaped (Jinja autoescape). ``voiceloop report`` writes it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.orm import Session

from collection.dataplan import DataPlan
from collection.models import utcnow
from monitoring import charts, dashboard, voc_queries
from monitoring.dashboard import Drift, TimeRange
from serving.web import STATIC_DIR, TEMPLATES_DIR

TOP_COMPLAINTS = 20
STYLESHEETS = ("style.css", "ops.css")


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html"]))


def _drifts(session: Session, rng: TimeRange) -> list[tuple[Drift, list[tuple[str, str]], str | None]]:
    """WER and CER (whichever the drift job stored), else the first metric stored; with their charts."""
    available = dashboard.available_metrics(session, rng)
    metrics = [m for m in dashboard.PREFERRED_METRICS if m in available] or list(available)[:1]
    out = []
    for metric in metrics:
        d = dashboard.drift(session, rng, metric=metric)
        out.append((d, charts.drift_charts(d), charts.comparison_chart(d)))
    return out


def build_report(session: Session, rng: TimeRange, *, plan: DataPlan | None = None,
                 now: datetime | None = None, model_name: str | None = None) -> str:
    """The report as an HTML string (stores missing traffic rollups like :func:`dashboard.overview`).
    ``model_name``: also the release steps of that model in the range, with the last judged one's chart."""
    now = now or utcnow()
    releases = [r for r in dashboard.releases(session, model_name) if rng.since <= r.at < rng.until] \
        if model_name else []
    judged = [r for r in releases if r.slices or r.overall]
    ov = dashboard.overview(session, rng, now=now)
    complaints = voc_queries.list_feedback(session, voc_queries.FeedbackFilter(since=rng.since, until=rng.until),
                                            limit=TOP_COMPLAINTS, facets=True)
    data = dashboard.data_status(session, plan) if plan is not None else None
    # our own stylesheets, inlined verbatim (escaping would break their quoted font names)
    css = Markup("\n".join((STATIC_DIR / name).read_text(encoding="utf-8") for name in STYLESHEETS))
    return _environment().get_template("ops_report.html").render(
        rng=rng, now=now, ov=ov, overview_charts=charts.overview_charts(ov), drifts=_drifts(session, rng),
        percent_metrics=charts.PERCENT_METRICS, box=complaints, data=data,
        data_charts=charts.data_charts(data.by_axis) if data else [], css=css, releases=releases,
        release_charts=[(r, charts.release_chart(r)) for r in judged[:3]])


def write_report(session: Session, rng: TimeRange, out: str | Path, *, plan: DataPlan | None = None,
                 model_name: str | None = None) -> Path:
    """Write :func:`build_report` to ``out`` (parents created); returns the path. The caller commits."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(session, rng, plan=plan, model_name=model_name), encoding="utf-8")
    return path
