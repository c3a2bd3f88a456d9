"""`voiceloop db …`: the catalog database."""

from __future__ import annotations

from typing import Annotated

import typer

from . import DataOpt, settings_for

app = typer.Typer(help="The catalog database.", no_args_is_help=True)


@app.command()
def upgrade(
    url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: the settings' catalog)")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Create or migrate the catalog schema to the newest version (also done on first use)."""
    from collection.db import upgrade as upgrade_db

    target = url or settings_for(data_dir).catalog
    upgrade_db(target)
    typer.echo(f"catalog at newest schema: {target}")
