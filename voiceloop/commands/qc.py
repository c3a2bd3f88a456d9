"""`voiceloop qc …`: what quality control accepted and rejected, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Quality-control reports.", no_args_is_help=True)


@app.command()
def report(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="data directory")] = None,
    source: Annotated[str | None, typer.Option(help="synthetic, upload, import, import:<format> or production")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Accepted vs rejected per source and reason; duration and SNR of what was kept."""
    import json

    from collection.db import connect
    from collection.qc_report import qc_report

    from ..settings import get_settings

    with connect(get_settings().with_data_dir(data_dir).catalog)() as session:
        result = qc_report(session, source=source)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        result.render()
