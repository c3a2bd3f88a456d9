"""`voiceloop stack …`: the embedded dev stack (Kafka-compatible broker, MLflow server)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The embedded dev stack: Kafka broker (tansu) and MLflow server.", no_args_is_help=True)
