"""`voiceloop dataset …`: Freeze reviewed labels into immutable, hashed dataset versions.

Each command parses its options and calls :mod:`collection.datasets` (docs/datasets-and-consent.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from collection.manifest import SLICE_KEYS

from . import DataOpt, settings_for

app = typer.Typer(help="Freeze reviewed labels into immutable, hashed dataset versions.", no_args_is_help=True)
console = Console()




def _ratios(text: str) -> dict[str, float]:
    try:
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        return {name.strip(): float(share) for name, share in pairs}
    except ValueError as e:
        raise typer.BadParameter(f"--splits {text!r}: expected name=share,… e.g. train=0.8,dev=0.1,test=0.1") from e


def counts_tables(counts: dict[str, Any]) -> list[Table]:
    """Totals per split, then one table per slice key (value × split)."""
    totals = Table(title="splits")
    for col in ("split", "utterances", "speakers", "hours"):
        totals.add_column(col, justify="left" if col == "split" else "right")
    for split, c in counts.items():
        t = c.get("total", {})
        totals.add_row(split, str(t.get("utterances", 0)), str(t.get("speakers", 0)),
                       f"{t.get('seconds', 0) / 3600:.2f}")
    tables = [totals]
    for key in SLICE_KEYS:
        table = Table(title=key)
        table.add_column(key)
        for split in counts:
            table.add_column(split, justify="right")
        values = sorted({v for c in counts.values() for v in c.get(key, {})})
        for v in values:
            table.add_row(v, *(str(counts[s].get(key, {}).get(v, 0)) for s in counts))
        tables.append(table)
    return tables


@app.command()
def build(
    name: Annotated[str, typer.Option(help="dataset name (versions of one name form a lineage)")] = "main",
    out: Annotated[Path | None, typer.Option(help="versions root (default: <data dir>/datasets)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the speaker → split hash")] = 0,
    splits: Annotated[str, typer.Option(help="speaker shares per split")] = "train=0.8,dev=0.1,test=0.1",
    parent: Annotated[str | None, typer.Option(help="parent version (default: the newest of this name)")] = None,
    simulated: Annotated[bool, typer.Option(help="include the simulated labeler's transcripts")] = True,
    data_dir: DataOpt = None,
) -> None:
    """Freeze the reviewed transcripts into a new version (or find the identical existing one)."""
    from collection.datasets import build_dataset
    from collection.db import session_scope
    from collection.store import AudioStore

    settings = settings_for(data_dir)
    try:
        with session_scope(settings.catalog) as session:
            version = build_dataset(session, AudioStore(settings.audio_store), out or settings.data_dir / "datasets",
                                    name=name, parent=parent, split_ratios=_ratios(splits), seed=seed,
                                    include_simulated=simulated)
    except ValueError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    console.print(f"dataset version [bold]{version.id}[/bold]  hash {version.content_hash}")
    console.print(f"manifest: {version.manifest_uri}" + (f"  parent: {version.parent_id}" if version.parent_id else ""))
    for table in counts_tables(version.counts):
        console.print(table)


@app.command("list")
def list_cmd(data_dir: DataOpt = None) -> None:
    """Every dataset version, oldest first."""
    from collection.datasets import list_versions
    from collection.db import session_scope

    settings = settings_for(data_dir)
    table = Table(title="dataset versions")
    for col in ("id", "name", "created", "parent", "utterances", "speakers", "redactions", "manifest"):
        table.add_column(col)
    with session_scope(settings.catalog) as session:
        for v in list_versions(session):
            totals = [c.get("total", {}) for c in v.counts.values()]
            table.add_row(v.id, v.name, f"{v.created_at:%Y-%m-%d %H:%M}", v.parent_id or "",
                          str(sum(t.get("utterances", 0) for t in totals)),
                          str(sum(t.get("speakers", 0) for t in totals)), str(len(v.redactions)), v.manifest_uri)
    console.print(table)
