"""`voiceloop import <format> PATH`: bring real corpora (and the synthetic studio's output) into the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import DataOpt, settings_for

app = typer.Typer(help="Import audio into the catalog from public corpus formats.", no_args_is_help=True)

# One command per format in collection.importers.IMPORTERS (named here so `--help` needs no heavy imports).
FORMATS = {
    "commonvoice": "Mozilla Common Voice: a locale dir with validated.tsv + clips/ (or one of its .tsv files).",
    "kaldi": "A Kaldi data dir: wav.scp, text, utt2spk [, segments, spk2gender].",
    "audiofolder": "A Hugging Face audiofolder: metadata.csv/.jsonl with file_name + transcription.",
    "lhotse": "lhotse manifests: recordings + supervisions JSONL (.gz), e.g. the studio's output.",
}


def _command(fmt: str):  # noqa: ANN202 - a typer command
    def run(
        path: Annotated[Path, typer.Argument(help="the corpus directory (or file, for commonvoice)")],
        data_dir: DataOpt = None,
        language: Annotated[str | None, typer.Option(help="language of the transcripts (default: settings)")] = None,
        limit: Annotated[int | None, typer.Option(help="import at most this many items")] = None,
        corpus: Annotated[str | None, typer.Option(help="corpus name in ids (default: directory name)")] = None,
        licence: Annotated[str | None, typer.Option(help="the corpus licence, kept with its consent")] = None,
        retention_days: Annotated[int, typer.Option(help="retention in the corpus consent")] = 3650,
        retry_rejected: Annotated[bool, typer.Option(help="examine items earlier runs refused again")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    ) -> None:
        import json

        from rich.console import Console

        from collection.db import connect
        from collection.importers import CorpusError, import_corpus
        from collection.store import AudioStore


        settings = settings_for(data_dir)
        console = Console(stderr=json_out)
        with connect(settings.catalog)() as session:
            try:
                report = import_corpus(session, AudioStore(settings.audio_store), fmt, path,
                                       language=language or settings.language, limit=limit, corpus=corpus,
                                       licence=licence, retention_days=retention_days,
                                       retry_rejected=retry_rejected, commit_every=200, progress=not json_out,
                                       erasure_secret=settings.erasure_secret)
            except (CorpusError, ValueError) as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2) from e
        if json_out:
            typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
            return
        console.print(f"{fmt}:{report.corpus}: {report.accepted} accepted ({report.seconds / 3600:.2f} h), "
                      f"{report.exists} already imported, {report.rejected} rejected"
                      + (f" {report.reasons}" if report.reasons else "")
                      + (f", {report.previously_rejected} refused earlier" if report.previously_rejected else ""))

    run.__doc__ = FORMATS[fmt]
    return run


for _fmt in FORMATS:
    app.command(_fmt)(_command(_fmt))
