"""`voiceloop qc …`: what quality control accepted and rejected, and why."""

from __future__ import annotations

from typing import Annotated

import typer

from . import DataOpt, settings_for

app = typer.Typer(help="Quality-control reports.", no_args_is_help=True)


@app.command()
def report(
    data_dir: DataOpt = None,
    source: Annotated[str | None, typer.Option(help="synthetic, upload, import, import:<format> or production")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Accepted vs rejected per source and reason; duration and SNR of what was kept."""
    import json

    from collection.db import connect
    from collection.qc_report import qc_report


    with connect(settings_for(data_dir).catalog)() as session:
        result = qc_report(session, source=source)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        result.render()
