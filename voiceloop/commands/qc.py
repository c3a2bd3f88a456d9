"""`voiceloop qc …`: what quality control accepted and rejected, and why."""

from __future__ import annotations

import typer

app = typer.Typer(help="Quality-control reports.", no_args_is_help=True)
