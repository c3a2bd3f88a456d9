"""`voiceloop plan …`: data plans — quota status per cell, re-collection plans, synthetic collection.

Each command parses its options and calls :mod:`collection.quota` / :mod:`collection.synthetic`
(docs/data-plans.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import DataOpt, settings_for

app = typer.Typer(help="Data plans: quota status per cell, re-collection plans, synthetic collection.",
                  no_args_is_help=True)
console = Console()

PlanOpt = Annotated[str, typer.Option(help="data plan YAML path or a name in collection/dataplans (demo, tiny)")]


def _plan(plan: str):
    from collection.dataplan import DataPlanError, load_dataplan

    try:
        return load_dataplan(plan)
    except DataPlanError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


@app.command()
def status(
    plan: PlanOpt = "demo",
    plot: Annotated[Path | None, typer.Option(help="heatmap PNG (default: <data dir>/plans/<plan>_status.png)")] = None,
    gaps_only: Annotated[bool, typer.Option("--gaps-only", help="list only cells below target")] = False,
    data_dir: DataOpt = None,
) -> None:
    """Collected / labeled / target per cell, as a table and a heatmap PNG."""
    from collection.db import session_scope
    from collection.quota import plan_status, plot_status, status_table

    settings, data_plan = settings_for(data_dir), _plan(plan)
    with session_scope(settings.catalog) as session:
        statuses = plan_status(session, data_plan)
    console.print(status_table(statuses, title=f"data plan {data_plan.name}", only_gaps=gaps_only))
    png = plot_status(statuses, plot or settings.data_dir / "plans" / f"{data_plan.name}_status.png",
                      title=f"data plan {data_plan.name}")
    console.print(f"plot: {png}")


@app.command()
def gaps(
    plan: PlanOpt = "demo",
    out: Annotated[Path | None, typer.Option(help="where to write it (default: <data dir>/plans/<plan>-gaps.yaml)")]
    = None,
    data_dir: DataOpt = None,
) -> None:
    """Write the cells still below target as a re-collection plan (same schema)."""
    from collection.dataplan import write_dataplan
    from collection.db import session_scope
    from collection.quota import plan_gaps

    settings, data_plan = settings_for(data_dir), _plan(plan)
    with session_scope(settings.catalog) as session:
        gap_plan = plan_gaps(session, data_plan)
    path = write_dataplan(gap_plan, out or settings.data_dir / "plans" / f"{gap_plan.name}.yaml")
    console.print(f"{len(gap_plan.cells)} cell(s), {gap_plan.total_target} utterance(s) to collect → {path}")


@app.command()
def collect(
    plan: PlanOpt = "demo",
    limit: Annotated[int | None, typer.Option(help="render at most this many utterances")] = None,
    workers: Annotated[int, typer.Option(help="rendering processes")] = 1,
    data_dir: DataOpt = None,
) -> None:
    """Fill the plan's missing utterances with synthetic studio speech (through QC into the catalog)."""
    from ..collect import collect_for_plan

    result = collect_for_plan(settings_for(data_dir), _plan(plan), limit=limit, workers=workers)
    console.print(f"plan {result.plan}: {result.rendered} rendered, {result.accepted} accepted, "
                  f"{result.rejected} refused by QC {result.rejections or ''}, {result.remaining} still missing")
