"""`voiceloop simulate …`: simulated devices streaming studio audio through the API and Kafka."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import DataOpt, settings_for

app = typer.Typer(help="Simulated devices and traffic.", no_args_is_help=True)


@app.command("devices")
def simulate_devices(
    url: Annotated[str, typer.Option(help="base URL of `voiceloop serve`")] = "http://127.0.0.1:8000",
    devices: Annotated[int, typer.Option("--devices", min=1, help="simulated devices (sim-0001 …)")] = 4,
    utterances: Annotated[int, typer.Option(min=1, help="commands to send in all")] = 40,
    via: Annotated[str, typer.Option(help="channels, comma-separated, used in turn: http, ws, kafka")] = "http,ws",
    rate: Annotated[float | None, typer.Option(
        help="utterances/s over all devices on a fixed schedule (open loop); "
             "default: each device speaks again once answered")] = None,
    plan: Annotated[str, typer.Option(help="studio plan the commands come from (tiny, demo or a YAML path)")] = "tiny",
    consent_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="share of devices whose owner consents to keeping audio")] = 0.5,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each answer")] = 30.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary (every outcome) here")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Register simulated devices in the data dir's catalog, speak studio commands to the service over the
    chosen channels and check every answer; prints latency, WER/CER and commands per channel. Exits 1 when
    any command went unanswered."""
    from rich.console import Console

    from serving.simulator import SimulationConfig, register_sim_devices, run_simulation, studio_commands

    settings = settings_for(data_dir)
    try:
        config = SimulationConfig(url=url, via=tuple(v.strip() for v in via.split(",") if v.strip()), rate=rate,
                                  kafka_bootstrap=settings.kafka_bootstrap,
                                  kafka_topic_prefix=settings.kafka_topic_prefix, timeout_s=timeout)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    console = Console()
    with console.status(f"studio audio of plan {plan!r} (rendered once, then cached)"):
        commands = studio_commands(plan, settings.data_dir, utterances)
    fleet = register_sim_devices(settings.catalog, devices, consent_share=consent_share)
    console.print(f"{len(fleet)} devices ({sum(d.consented for d in fleet)} with consent), {len(commands)} commands "
                  f"via {', '.join(config.via)} to {url}")
    summary = run_simulation(config, fleet, commands, language=settings.language, progress=True)
    console.print(summary.table(f"simulated devices ({summary.wall_s:.1f} s)"))
    for line in summary.first_errors():
        console.print(f"[red]{line}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary.to_dict(), ensure_ascii=False, indent=1))
    if summary.errors:
        raise typer.Exit(1)
