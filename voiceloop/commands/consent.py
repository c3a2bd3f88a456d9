"""`voiceloop consent …`: Consent, revocation and deletion requests."""

from __future__ import annotations

import typer

app = typer.Typer(help="Consent, revocation and deletion requests.", no_args_is_help=True)
