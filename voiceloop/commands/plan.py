"""`voiceloop plan …`: Data plans: quota status per cell and re-collection plans."""

from __future__ import annotations

import typer

app = typer.Typer(help="Data plans: quota status per cell and re-collection plans.", no_args_is_help=True)
