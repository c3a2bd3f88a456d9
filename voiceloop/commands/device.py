"""`voiceloop device …`: register devices, rotate and revoke their keys, record their owners' consent and profile."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from . import DataOpt, settings_for

app = typer.Typer(help="Device credentials and consent.", no_args_is_help=True)


def _fail(e: Exception) -> typer.Exit:
    typer.secho(f"error: {e}", fg="red", err=True)
    return typer.Exit(1)


RegionOpt = Annotated[str | None, typer.Option(help="owner's dialect region (standard, gyeongsang, …)")]
AgeBandOpt = Annotated[str | None, typer.Option(help="owner's age band (20s … 70s+)")]
EnvironmentOpt = Annotated[str | None, typer.Option(help="where the speaker stands (quiet, tv, kitchen, far_field)")]


def _profile(region: str | None, age_band: str | None, environment: str | None) -> dict[str, str | None]:
    given = {"region": region, "age_band": age_band, "environment": environment}
    return {k: v for k, v in given.items() if v is not None}


@app.command()
def add(device_id: str, device_type: Annotated[str, typer.Option(help="device type (a slice)")] = "speaker",
        region: RegionOpt = None, age_band: AgeBandOpt = None, environment: EnvironmentOpt = None,
        data_dir: DataOpt = None) -> None:
    """Register a device (with its owner's profile, optional) and print its key (shown once)."""
    from collection.db import connect
    from serving.devices import DeviceError, register_device

    with connect(settings_for(data_dir).catalog)() as session:
        try:
            issued = register_device(session, device_id, device_type, actor="cli",
                                     profile=_profile(region, age_band, environment))
        except DeviceError as e:
            raise _fail(e) from e
        session.commit()
    typer.echo(issued.key)


@app.command()
def profile(device_id: str, region: RegionOpt = None, age_band: AgeBandOpt = None,
            environment: EnvironmentOpt = None, data_dir: DataOpt = None) -> None:
    """Change the owner's profile: the options given are set ('' clears one), the rest stay. Prints it."""
    from collection.db import connect
    from serving.devices import DeviceError, device_profile, set_device_profile

    with connect(settings_for(data_dir).catalog)() as session:
        try:
            device = set_device_profile(session, device_id, _profile(region, age_band, environment), actor="cli")
        except DeviceError as e:
            raise _fail(e) from e
        session.commit()
        shown = device_profile(device)
    typer.echo(f"{device_id}: " + ", ".join(f"{k}={v or '-'}" for k, v in shown.items()))


@app.command()
def rotate(device_id: str,
           overlap_hours: Annotated[float, typer.Option(help="how long the old key keeps working")] = 24.0,
           data_dir: DataOpt = None) -> None:
    """Issue a new key; the old one stops after the overlap window. Prints the new key."""
    from collection.db import connect
    from serving.devices import DeviceError, rotate_key

    with connect(settings_for(data_dir).catalog)() as session:
        try:
            issued = rotate_key(session, device_id, timedelta(hours=overlap_hours), actor="cli")
        except DeviceError as e:
            raise _fail(e) from e
        session.commit()
    typer.echo(issued.key)
    typer.echo(f"old key works until {issued.old_key_expires_at:%Y-%m-%d %H:%M} UTC", err=True)


@app.command()
def revoke(device_id: str, data_dir: DataOpt = None) -> None:
    """Stop every key of a device now."""
    from collection.db import connect
    from serving.devices import DeviceError, revoke_device

    with connect(settings_for(data_dir).catalog)() as session:
        try:
            revoke_device(session, device_id, actor="cli")
        except DeviceError as e:
            raise _fail(e) from e
        session.commit()
    typer.echo(f"{device_id}: revoked")


@app.command()
def consent(device_id: str,
            training: Annotated[bool, typer.Option(help="the owner agrees that audio may train models")] = True,
            human_review: Annotated[bool, typer.Option(help="people may listen to it")] = True,
            retention_days: Annotated[int, typer.Option(help="days audio may be kept")] = 365,
            text_version: Annotated[str, typer.Option(help="version of the consent text agreed to")] = "device-v1",
            data_dir: DataOpt = None) -> None:
    """Record the device owner's consent for keeping production audio (supersedes an earlier one)."""
    from collection.consent import grant_device_consent
    from collection.db import connect

    with connect(settings_for(data_dir).catalog)() as session:
        c = grant_device_consent(session, device_id=device_id, text_version=text_version, scope_training=training,
                                 scope_human_review=human_review, retention_days=retention_days, actor="cli")
        session.commit()
    typer.echo(f"{device_id}: consent {c.id} (training={training}, human review={human_review}, "
               f"{retention_days} days)")
