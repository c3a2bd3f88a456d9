"""`voiceloop db …`: The catalog database."""

from __future__ import annotations

import typer

app = typer.Typer(help="The catalog database.", no_args_is_help=True)


@app.command()
def upgrade(
    url: str | None = typer.Option(None, help="SQLAlchemy URL (default: settings' catalog)"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="data directory"),
) -> None:
    """Create or migrate the catalog schema to the newest version (also done on first use)."""
    from pathlib import Path

    from collection.db import upgrade as upgrade_db

    from ..settings import get_settings

    target = url or get_settings().with_data_dir(Path(data_dir) if data_dir else None).catalog
    upgrade_db(target)
    typer.echo(f"catalog at newest schema: {target}")
