"""`voiceloop report`: the monitoring report for a time range as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import DataOpt, settings_for

console = Console()


def report(
    since: Annotated[str, typer.Option(help="start: a duration back from now (24h, 7d, 2w) or ISO 8601 "
                                            "(2026-11-01, 2026-11-01T09:00+09:00; no zone = UTC)")] = "7d",
    until: Annotated[str, typer.Option(help="end: now, a duration back or ISO 8601")] = "now",
    out: Annotated[Path | None, typer.Option(help="the HTML file (default: <data dir>/reports/report_<until>.html)")]
    = None,
    plan: Annotated[str | None, typer.Option(help="also show this data plan's quotas (name or YAML path)")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Write the monitoring report (traffic, latency, drift per slice with alerts, champion vs challenger,
    complaints, data quotas) as a self-contained HTML file: inline SVG and CSS, nothing fetched."""
    from collection.dataplan import DataPlanError, load_dataplan
    from collection.db import session_scope
    from monitoring.report import write_report
    from monitoring.timerange import MonitoringError, TimeRange

    settings = settings_for(data_dir)
    try:
        rng = TimeRange.parse(since, until)
        data_plan = load_dataplan(plan, search=(settings.data_dir / "plans",)) if plan else None
    except (MonitoringError, DataPlanError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    path = out or settings.data_dir / "reports" / f"report_{rng.until:%Y%m%dT%H%M}.html"
    with session_scope(settings.catalog) as session:
        written = write_report(session, rng, path, plan=data_plan, model_name=settings.model_name)
    console.print(f"report {rng.since:%Y-%m-%d %H:%M} – {rng.until:%Y-%m-%d %H:%M} UTC → {written}", soft_wrap=True)
