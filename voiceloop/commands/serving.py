"""`voiceloop serve` and `voiceloop worker`: the device API (with the web pages) and the Kafka inference worker."""

from __future__ import annotations

from typing import Annotated

import typer

from . import DataOpt, settings_for

ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="local checkpoint instead of models:/<name>@champion (no hot swap then)")]


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0 for every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    plan: Annotated[str, typer.Option(help="data plan the recording page collects for (name or YAML path)")] = "demo",
    model: ModelOpt = None,
    shadow: Annotated[bool | None, typer.Option(help="run @challenger on a copy of traffic")] = None,
    canary: Annotated[float | None, typer.Option(help="share of requests answered by @challenger")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Serve the device API (/v1/…, /metrics, /docs), the recording page and the labeling workbench."""
    import uvicorn

    from serving.api.main import create_app
    from voiceloop.serving import model_manager_for

    settings = settings_for(data_dir)
    overrides = {k: v for k, v in {"model_path": model, "shadow": shadow, "canary_share": canary}.items()
                 if v is not None}
    settings = settings.model_copy(update=overrides)
    web = create_app(settings, plan=plan, models=model_manager_for(settings))
    typer.echo(f"device API: http://{host}:{port}/docs   recording page: http://{host}:{port}/record   "
               f"workbench: http://{host}:{port}/login")
    uvicorn.run(web, host=host, port=port, proxy_headers=True, log_level="warning")


def worker(
    model: ModelOpt = None,
    group: Annotated[str, typer.Option(help="Kafka consumer group")] = "voiceloop-asr",
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics on this port")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Transcribe utterances streamed to Kafka (asr.audio → asr.transcripts); stops cleanly on SIGTERM."""
    from serving.worker import run_worker
    from voiceloop.serving import model_manager_for

    settings = settings_for(data_dir)
    if model is not None:
        settings = settings.model_copy(update={"model_path": model})
    run_worker(settings, model_manager_for(settings), group=group, metrics_port=metrics_port)
