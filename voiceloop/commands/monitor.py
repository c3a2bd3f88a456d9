"""`voiceloop monitor …`: the drift job per window and its alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import DataOpt, settings_for

app = typer.Typer(help="Drift per slice (online WER, input drift, confidence, VOC rate) and alerts.",
                  no_args_is_help=True)
console = Console()
MAX_BACKFILL = 10_000


def _instant(text: str | None, option: str) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text)
    except ValueError as e:
        raise typer.BadParameter(f"{text!r} is not an ISO date-time (e.g. 2025-01-31T14:00, UTC unless it names "
                                 f"an offset)", param_hint=option) from e
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@app.command()
def drift(
    window: Annotated[str, typer.Option(help="window length: 15m, 1h, 1d … (default: the drift_window_s setting)")]
    = "",
    until: Annotated[str | None, typer.Option(help="end of the newest window, ISO date-time (default: now); "
                                                   "windows are aligned to multiples of their length")] = None,
    backfill: Annotated[int, typer.Option(help="compute this many windows ending at --until, oldest first")] = 1,
    baseline: Annotated[bool, typer.Option(help="read offline baselines and the input reference of the "
                                                "champion from MLflow")] = True,
    data_dir: DataOpt = None,
) -> None:
    """Compute slice metrics for whole windows up to --until and evaluate the alerts of each."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from monitoring.drift import parse_window, window_ends
    from monitoring.job import DriftJob

    settings = settings_for(data_dir)
    try:
        window_s = parse_window(window) if window else settings.drift_window_s
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--window") from e
    if not 1 <= backfill <= MAX_BACKFILL:
        raise typer.BadParameter(f"{backfill} windows; give 1 to {MAX_BACKFILL}", param_hint="--backfill")
    ends = window_ends(_instant(until, "--until"), window_s, backfill)
    job = DriftJob.from_settings(settings, baselines=baseline)
    table = Table(title=f"drift windows of {window_s} s (alerts opened / still firing / resolved)")
    table.add_column("window end (UTC)", no_wrap=True)
    for col in ("utterances", "labeled", "rows", "opened", "firing", "resolved", "s"):
        table.add_column(col, justify="right")
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("drift windows", total=len(ends))
        for end in ends:
            result, summary = job.run(end, window_s)
            table.add_row(end.strftime("%Y-%m-%d %H:%M"), str(result.utterances), str(result.labeled),
                          str(result.rows), str(len(summary.opened)), str(len(summary.continuing)),
                          str(len(summary.resolved)), f"{result.seconds:.2f}")
            progress.advance(task)
    console.print(table)
    if job.reference is None and baseline:
        console.print("[yellow]no input reference for the champion: PSI/KS were not computed[/]")


@app.command()
def alerts(
    kind: Annotated[list[str], typer.Option(help="only this kind (repeatable)")] = [],  # noqa: B006
    since: Annotated[str | None, typer.Option(help="only alerts first fired at or after this ISO date-time")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON lines instead of a table")] = False,
    data_dir: DataOpt = None,
) -> None:
    """The open alerts, newest first."""
    from collection.db import connect
    from monitoring.alerts import open_alerts

    try:
        found = open_alerts(connect(settings_for(data_dir).catalog), kinds=kind or None,
                            since=_instant(since, "--since") if since else None)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--kind") from e
    if json_out:
        for a in found:
            typer.echo(json.dumps({"id": a.id, "kind": a.kind, "slice_key": a.slice_key, "slice_value": a.slice_value,
                                   "metric": a.metric, "model_version": a.model_version, "value": a.value,
                                   "baseline": a.baseline, "threshold": a.threshold,
                                   "window_end": a.window_end.isoformat(), "detail": a.detail}, ensure_ascii=False))
        return
    table = Table(title=f"{len(found)} open alert(s)")
    for col in ("since (UTC)", "kind", "slice", "metric", "model", "value", "baseline", "threshold", "windows"):
        table.add_column(col)
    for a in found:
        table.add_row(a.window_end.strftime("%Y-%m-%d %H:%M"), a.kind, f"{a.slice_key}={a.slice_value}", a.metric,
                      a.model_version or "all", _num(a.value), _num(a.baseline), _num(a.threshold),
                      str((a.detail or {}).get("windows", 1)))
    console.print(table)


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"
