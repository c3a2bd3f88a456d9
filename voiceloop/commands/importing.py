"""`voiceloop import …`: bring real corpora (and the synthetic studio's output) into the catalog."""

from __future__ import annotations

import typer

app = typer.Typer(help="Import audio into the catalog from public corpus formats.", no_args_is_help=True)
