"""`voiceloop label …`: Labeling workbench: tasks, pre-labels, review, labeler reports, users."""

from __future__ import annotations

import typer

app = typer.Typer(help="Labeling workbench: tasks, pre-labels, review, labeler reports, users.", no_args_is_help=True)
