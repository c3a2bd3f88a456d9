"""`voiceloop web …`: The web app: recording page and labeling workbench."""

from __future__ import annotations

from typing import Annotated

import typer

from . import DataOpt, settings_for

app = typer.Typer(help="The web app: recording page and labeling workbench.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0 for every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    plan: Annotated[str, typer.Option(help="data plan the recording page collects for (name or YAML path)")] = "demo",
    data_dir: DataOpt = None,
) -> None:
    """Serve the recording page (/record), the labeling workbench (/label, /review) and admin (/admin)."""
    import uvicorn

    from serving.api.main import create_app


    web = create_app(settings_for(data_dir), plan=plan)
    typer.echo(f"recording page: http://{host}:{port}/record   workbench: http://{host}:{port}/login")
    uvicorn.run(web, host=host, port=port, proxy_headers=True)
