"""`voiceloop label …`: Labeling workbench: tasks, pre-labels, review, labeler reports, users.

Each command parses its options and calls :mod:`collection.labeling` (docs/labeling.md).
"""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import typer
from rich.console import Console

from . import DataOpt, settings_for

app = typer.Typer(help="Labeling workbench: tasks, pre-labels, review, labeler reports, users.", no_args_is_help=True)
tasks_app = typer.Typer(help="The label task queue.", no_args_is_help=True)
users_app = typer.Typer(help="Labelers, reviewers and admins.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(users_app, name="users")
console = Console()




def _users(session, names: list[str]):
    from sqlalchemy import select

    from collection.models import User

    found = {u.username: u for u in session.scalars(select(User).where(User.username.in_(names)))}
    if missing := [n for n in names if n not in found]:
        known = sorted(session.scalars(select(User.username)))
        raise typer.BadParameter(f"unknown user(s) {missing}; known: {known or 'none'} "
                                 "(add one with `voiceloop label users add NAME --role labeler`)")
    return [found[n] for n in names]


def _fail(e: Exception) -> typer.Exit:
    typer.echo(str(e), err=True)
    return typer.Exit(1)


@tasks_app.command("create")
def tasks_create(
    reason: Annotated[str, typer.Option(help="voc, low_confidence, recollect or new")] = "new",
    double_share: Annotated[float | None, typer.Option(
        help="share transcribed twice, 0..1 (default: settings' double_label_share)")] = None,
    priority: Annotated[int | None, typer.Option(help="override the reason's default priority")] = None,
    recording: Annotated[list[str], typer.Option(help="only these recording ids (repeatable; default all)")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(help="seed of the double-transcription choice")] = 0,
    data_dir: DataOpt = None,
) -> None:
    """Queue every recording people may listen to and that has no task yet (re-running adds nothing)."""
    from collection.db import session_scope
    from collection.labeling import LabelingError, create_tasks

    settings = settings_for(data_dir)
    share = settings.double_label_share if double_share is None else double_share
    try:
        with session_scope(settings.catalog) as session:
            tasks = create_tasks(session, recording or None, reason=reason, priority=priority, double_share=share,
                                 seed=seed)
            doubles = sum(t.round == 2 for t in tasks)
    except LabelingError as e:
        raise _fail(e) from e
    console.print(f"{len(tasks)} task(s) created or moved up ({doubles} second-round)")


@app.command()
def prelabel(
    model: Annotated[str | None, typer.Option(
        help="checkpoint path or models:/<name>@<alias> (default: models:/<model_name>@champion)")] = None,
    threshold: Annotated[float, typer.Option(help="confidence below which a task becomes low_confidence")] = 0.6,
    data_dir: DataOpt = None,
) -> None:
    """Pre-label open tasks with the model's transcript and confidence (re-running skips done ones)."""
    from ..collect import prelabel_open_tasks

    n, version = prelabel_open_tasks(settings_for(data_dir), model, decoder="greedy", threshold=threshold)
    console.print(f"{n} task(s) pre-labelled by {version}")


@app.command()
def assign(
    labelers: Annotated[str, typer.Option(help="comma-separated user names")],
    per_labeler: Annotated[int | None, typer.Option(help="most open tasks each one holds")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Deal unassigned tasks round-robin (never both rounds of a recording to one person)."""
    from collection.db import session_scope
    from collection.labeling import LabelingError
    from collection.labeling import assign as run_assign

    names = [n.strip() for n in labelers.split(",") if n.strip()]
    try:
        with session_scope(settings_for(data_dir).catalog) as session:
            n = run_assign(session, _users(session, names), per_labeler=per_labeler)
    except LabelingError as e:
        raise _fail(e) from e
    console.print(f"{n} task(s) assigned to {', '.join(names)}")


@app.command()
def simulate(
    user: Annotated[str, typer.Option(help="a simulated user (users add NAME --simulated)")],
    error_rate: Annotated[float, typer.Option(help="character error rate of the answers, 0..1")] = 0.05,
    seed: Annotated[int, typer.Option(help="seed of the errors")] = 0,
    limit: Annotated[int | None, typer.Option(help="most tasks to answer")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Answer a simulated labeler's open tasks from the known prompt texts (demo and tests only)."""
    from collection.db import session_scope
    from collection.labeling import LabelingError, simulate_labeler

    try:
        with session_scope(settings_for(data_dir).catalog) as session:
            n = simulate_labeler(session, _users(session, [user])[0], error_rate=error_rate, seed=seed, limit=limit)
    except LabelingError as e:
        raise _fail(e) from e
    console.print(f"{user} submitted {n} task(s)")


@app.command("simulate-review")
def simulate_review(
    user: Annotated[str, typer.Option(help="a simulated reviewer (users add NAME --role reviewer --simulated)")],
    max_cer: Annotated[float, typer.Option(help="accept labels within this CER of the prompt text")] = 0.1,
    data_dir: DataOpt = None,
) -> None:
    """Review the queue against the known prompt texts (demo and tests only)."""
    from collection.db import session_scope
    from collection.labeling import LabelingError, simulate_reviewer

    try:
        with session_scope(settings_for(data_dir).catalog) as session:
            n = simulate_reviewer(session, _users(session, [user])[0], max_cer=max_cer)
    except LabelingError as e:
        raise _fail(e) from e
    console.print(f"{user} decided {n} label(s)")


@app.command()
def report(data_dir: DataOpt = None) -> None:
    """Throughput and agreement per labeler."""
    from collection.db import session_scope
    from collection.labeling import labeler_report, labeler_table

    with session_scope(settings_for(data_dir).catalog) as session:
        console.print(labeler_table(labeler_report(session)))


@app.command()
def guidelines(
    language: Annotated[str | None, typer.Option(help="language code (default: settings' language)")] = None,
) -> None:
    """Print the transcription guideline labelers follow."""
    from rich.markdown import Markdown

    from collection.labeling import LabelingError
    from collection.labeling import guidelines as read_guidelines

    try:
        console.print(Markdown(read_guidelines(language or settings_for(None).language)))
    except LabelingError as e:
        raise _fail(e) from e


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="user name (a-z, 0-9, '.', '_', '-')")],
    role: Annotated[str, typer.Option(help="labeler, reviewer, admin or ops")] = "labeler",
    password_env: Annotated[str | None, typer.Option(help="read the password from this environment variable")] = None,
    simulated: Annotated[bool, typer.Option(help="a simulated labeler (answers from prompt texts)")] = False,
    data_dir: DataOpt = None,
) -> None:
    """Add a user (re-running with the same role changes nothing). Without --password-env the password is
    prompted for; a simulated user gets a random one (nobody signs in as it)."""
    from collection.db import session_scope
    from collection.users import create_user

    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise typer.BadParameter(f"environment variable {password_env} is not set or empty")
    elif simulated:
        password = secrets.token_urlsafe(24)
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope(settings_for(data_dir).catalog) as session:
            user = create_user(session, name, role, password, simulated=simulated)
            uid, simulated_flag = user.id, user.simulated
    except ValueError as e:
        raise _fail(e) from e
    console.print(f"{name}: {role}{' (simulated)' if simulated_flag else ''} — {uid}")
