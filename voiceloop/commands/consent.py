"""`voiceloop consent …`: Consent, revocation and deletion requests.

Each command parses its options and calls :mod:`collection.consent` / :mod:`collection.deletion`
(docs/datasets-and-consent.md). Model versions trained on affected dataset versions are looked up in
the configured MLflow registry.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import DataOpt, settings_for

app = typer.Typer(help="Consent, revocation and deletion requests.", no_args_is_help=True)
console = Console()

ActorOpt = Annotated[str | None, typer.Option(help="who asks (recorded in the audit log; default: the OS user)")]
ModelsOpt = Annotated[bool, typer.Option(help="look up registered model versions trained on affected data")]


def _context(data_dir: Path | None, models: bool):
    from collection.store import AudioStore


    settings = settings_for(data_dir)
    if models:
        from ..pipeline import connect_mlflow

        connect_mlflow(settings)
    return settings, AudioStore(settings.audio_store)


def _show(reports) -> None:
    for r in reports:
        console.print(json.dumps(r.to_dict(), ensure_ascii=False, indent=2))


def _run(fn) -> list:
    try:
        reports = fn()
    except (LookupError, ValueError) as e:
        typer.echo(str(e).strip("'\""), err=True)
        raise typer.Exit(1) from e
    _show(reports)
    return reports


@app.command()
def revoke(
    subject: Annotated[str, typer.Argument(help="consent id (con-…) or speaker id (spk-…)")],
    actor: ActorOpt = None,
    models: ModelsOpt = True,
    data_dir: DataOpt = None,
) -> None:
    """Withdraw a consent and erase everything it covered (audio, transcripts, dataset-version lines)."""
    from collection.consent import revoke_consent
    from collection.db import session_scope

    settings, store = _context(data_dir, models)

    def go():
        with session_scope(settings.catalog) as session:
            return revoke_consent(session, store, subject, actor=actor or getpass.getuser(),
                                  secret=settings.erasure_secret, check_models=models)

    _run(go)


@app.command()
def delete(
    speaker_id: Annotated[str, typer.Argument(help="speaker id (spk-…)")],
    reason: Annotated[str, typer.Option(help="why (e.g. the ticket of the deletion request)")],
    actor: ActorOpt = None,
    models: ModelsOpt = True,
    data_dir: DataOpt = None,
) -> None:
    """Carry out a deletion request: erase one speaker from every store and report where they had been."""
    from collection.db import session_scope
    from collection.deletion import delete_speaker

    settings, store = _context(data_dir, models)

    def go():
        with session_scope(settings.catalog) as session:
            return [delete_speaker(session, store, speaker_id, actor=actor or getpass.getuser(), reason=reason,
                                   secret=settings.erasure_secret, check_models=models)]

    _run(go)


@app.command()
def expire(
    actor: ActorOpt = None,
    models: ModelsOpt = True,
    data_dir: DataOpt = None,
) -> None:
    """Erase speakers and production audio whose consent's retention period has passed, and stored audio
    no recording references (older than an hour)."""
    from collection.consent import expire_retention
    from collection.db import session_scope
    from collection.deletion import sweep_orphans

    settings, store = _context(data_dir, models)

    def go():
        with session_scope(settings.catalog) as session:
            return expire_retention(session, store, secret=settings.erasure_secret, actor=actor or "retention",
                                    check_models=models)

    reports = _run(go)
    with session_scope(settings.catalog) as session:
        swept = sweep_orphans(session, store)
    console.print(f"{len(reports)} deletion(s) for expired retention, {swept} unreferenced audio file(s) removed")
