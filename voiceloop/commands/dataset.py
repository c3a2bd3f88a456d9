"""`voiceloop dataset …`: Freeze reviewed labels into immutable, hashed dataset versions."""

from __future__ import annotations

import typer

app = typer.Typer(help="Freeze reviewed labels into immutable, hashed dataset versions.", no_args_is_help=True)
