"""`voiceloop simulate …`: simulated devices streaming studio audio through the API and Kafka."""

from __future__ import annotations

import typer

app = typer.Typer(help="Simulated devices and traffic.", no_args_is_help=True)
