"""`voiceloop plan …`: data plans — quota status per cell, re-collection plans, synthetic collection.

Each command parses its options and calls :mod:`collection.quota` / :mod:`collection.synthetic`
(docs/data-plans.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from ..settings import Settings
from . import DataOpt, settings_for

if TYPE_CHECKING:
    from collection.dataplan import DataPlan

app = typer.Typer(help="Data plans: quota status per cell, re-collection plans, synthetic collection.",
                  no_args_is_help=True)
console = Console()

PlanOpt = Annotated[str, typer.Option(help="data plan: YAML path, a name in <data dir>/plans (where `plan gaps` "
                                           "writes) or in collection/dataplans (demo, tiny)")]


def _plan(plan: str, settings: Settings) -> DataPlan:
    from collection.dataplan import DataPlanError, load_dataplan

    try:
        return load_dataplan(plan, search=(settings.data_dir / "plans",))
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

    settings = settings_for(data_dir)
    data_plan = _plan(plan, settings)
    with session_scope(settings.catalog) as session:
        statuses = plan_status(session, data_plan)
    console.print(status_table(statuses, title=f"data plan {data_plan.name}", only_gaps=gaps_only))
    png = plot_status(statuses, plot or settings.data_dir / "plans" / f"{data_plan.name}_status.png",
                      title=f"data plan {data_plan.name}")
    console.print(f"plot: {png}", soft_wrap=True)  # a path must stay copyable: never wrapped


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
    from collection.quota import plan_gaps, plan_status

    settings = settings_for(data_dir)
    data_plan = _plan(plan, settings)
    with session_scope(settings.catalog) as session:
        gap_plan = plan_gaps(session, data_plan)
        # Not total_target: a gap plan's targets include what it already collected itself.
        missing = sum(s.remaining for s in plan_status(session, gap_plan))
    path = write_dataplan(gap_plan, out or settings.data_dir / "plans" / f"{gap_plan.name}.yaml")
    console.print(f"{len(gap_plan.cells)} cell(s), {missing} utterance(s) to collect → {path}", soft_wrap=True)


@app.command()
def collect(
    plan: PlanOpt = "demo",
    limit: Annotated[int | None, typer.Option(min=0, help="render at most this many utterances")] = None,
    workers: Annotated[int, typer.Option(min=1, help="rendering processes")] = 1,
    data_dir: DataOpt = None,
) -> None:
    """Fill the plan's missing utterances with synthetic studio speech (through QC into the catalog)."""
    from ..collect import collect_for_plan

    settings = settings_for(data_dir)
    result = collect_for_plan(settings, _plan(plan, settings), limit=limit, workers=workers)
    console.print(f"plan {result.plan}: {result.rendered} rendered, {result.accepted} accepted, "
                  f"{result.rejected} refused by QC {result.rejections or ''}, {result.remaining} still missing")
