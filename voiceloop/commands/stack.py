"""`voiceloop stack …`: the embedded dev stack (Kafka-compatible broker, MLflow server, Airflow)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import DataOpt, settings_for

app = typer.Typer(help="The embedded dev stack: Kafka broker (tansu), MLflow server and (--airflow) Airflow.",
                  no_args_is_help=True)


def _show(statuses) -> None:  # noqa: ANN001 - dict[str, ServiceStatus]
    for name, s in statuses.items():
        if s.running:
            typer.echo(f"{name:>7}: running  {s.state.url}  (pid {s.state.pid}, log {s.state.log})")
        else:
            typer.echo(f"{name:>7}: stopped  ({s.problem})")


@app.command()
def up(
    kafka_port: Annotated[int, typer.Option(help="port of the Kafka-compatible broker (tansu)")] = 9092,
    mlflow_port: Annotated[int, typer.Option(help="port of the MLflow server (UI + tracking API)")] = 5000,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="start the broker only")] = False,
    with_airflow: Annotated[bool, typer.Option(
        "--airflow", help="also start Airflow 3 (`airflow standalone`; home in <data dir>/airflow, DAGs from dags/)",
    )] = False,
    airflow_port: Annotated[int, typer.Option(help="port of the Airflow UI and REST API")] = 8080,
    data_dir: DataOpt = None,
) -> None:
    """Start the broker (and the MLflow server, and Airflow) in the background; harmless when already up."""
    from infra.stack import StackError
    from infra.stack import up as stack_up
    from serving.worker.client import ensure_topics

    settings = settings_for(data_dir)
    services = ("kafka",) if no_mlflow else ("kafka", "mlflow")
    if with_airflow:
        services += ("airflow",)
    ports = {"kafka": kafka_port, "mlflow": mlflow_port, "airflow": airflow_port}
    try:
        statuses = stack_up(settings, ports, services)
    except StackError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    kafka = statuses["kafka"].state
    topics = ensure_topics(kafka.url, prefix=settings.kafka_topic_prefix)
    _show({name: statuses[name] for name in services})
    typer.echo(f"topics: {', '.join(topics.all())}")
    if kafka.url != settings.kafka_bootstrap:
        typer.echo(f"note: set VOICELOOP_KAFKA_BOOTSTRAP={kafka.url} for `voiceloop worker` and the simulator")
    if not no_mlflow:
        typer.echo(f"MLflow UI: {statuses['mlflow'].state.url}   (stores: {settings.tracking_uri})")
    if with_airflow:
        from infra.airflow import login_help

        typer.echo(login_help(settings, statuses["airflow"].state.url))


@app.command()
def down(data_dir: DataOpt = None) -> None:
    """Stop the stack (the broker keeps messages in memory only: they are gone afterwards)."""
    from infra.stack import down as stack_down

    stopped = stack_down(settings_for(data_dir))
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(data_dir: DataOpt = None) -> None:
    """Which services run, where, and their logs; exits 1 when a started service is no longer running."""
    from infra.stack import status as stack_status

    statuses = stack_status(settings_for(data_dir))
    _show(statuses)
    if any(s.state is not None and not s.running for s in statuses.values()):
        raise typer.Exit(1)
