"""The ``voiceloop`` command: one sub-command per stage; each parses options and calls library code."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from .commands import DataOpt, settings_for

app = typer.Typer(help="voiceloop: plan, collect, label, train, serve and monitor speech recognition.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()



@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def synth(
    plan: Annotated[str, typer.Option(help="plan YAML path or a name in collection/plans (demo, tiny)")] = "demo",
    out: Annotated[Path | None, typer.Option(help="output directory (default: <data dir>/studio)")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Generate a synthetic speech data set from a data plan."""
    from collection.studio import synthesize_plan

    splits = synthesize_plan(plan, out or settings_for(data_dir).data_dir / "studio")
    for name, path in splits.items():
        console.print(f"{name:>12}: {path}")


@app.command("train")
def train_cmd(
    data: Annotated[Path | None, typer.Option(help="root of train/ dev/ (default: <data dir>/studio)")] = None,
    config: Annotated[str, typer.Option(help="training config YAML or a name in asr/configs")] = "baseline",
    out: Annotated[Path | None, typer.Option(help="checkpoints + curve (default: <data dir>/runs/<config>)")] = None,
    minutes: Annotated[float | None, typer.Option(help="training-time budget (overrides the config)")] = None,
    steps: Annotated[int | None, typer.Option(help="step budget (overrides the config)")] = None,
    backend: Annotated[str | None, typer.Option(help="conformer_ctc or wav2vec2_ctc (overrides the config)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from out/last.pt")] = False,
    init_from: Annotated[Path | None, typer.Option(help="fine-tune: start from this checkpoint's weights")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Train an acoustic model (CPU, CUDA, or several GPUs under torchrun) and log it to MLflow."""
    from asr.train import load_train_config

    from .pipeline import train_model

    settings = settings_for(data_dir)
    cfg = load_train_config(config, max_minutes=minutes, max_steps=steps, backend=backend,
                            init_from=str(init_from) if init_from else None)
    out = out or settings.data_dir / "runs" / Path(config).stem
    trained = train_model(settings, data or settings.data_dir / "studio", cfg, out, resume=resume)
    console.print(f"checkpoint: {trained.result.checkpoint}\nMLflow run: {trained.run_id}")


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option(help="checkpoint path, runs:/<id>/checkpoint or models:/<name>@<alias>")],
    data: Annotated[Path | None, typer.Option(help="dataset root (default: <data dir>/studio)")] = None,
    split: Annotated[list[str], typer.Option(help="split(s) to evaluate")] = ["test_seen"],  # noqa: B006
    out: Annotated[Path | None, typer.Option(help="where <split>.json reports go (default: <data dir>/eval)")] = None,
    run_id: Annotated[str | None, typer.Option(help="log metrics into this MLflow run")] = None,
    decoder: Annotated[str, typer.Option(help="beam (with the model's n-gram LM) or greedy")] = "beam",
    data_dir: DataOpt = None,
) -> None:
    """WER / CER / command exact-match per slice with 95% bootstrap intervals."""
    from .pipeline import evaluate_splits

    settings = settings_for(data_dir)
    out = out or settings.data_dir / "eval"
    reports = evaluate_splits(settings, model, data or settings.data_dir / "studio", split, out, run_id, decoder)
    for name, report in reports.items():
        report.print(title=f"{name} — {model}", console=console)
    console.print(f"reports: {out}/")


@app.command("register")
def register_cmd(
    run_id: Annotated[str | None, typer.Option(help="MLflow run whose checkpoint becomes a new version")] = None,
    alias: Annotated[str | None, typer.Option(help="champion or challenger")] = None,
    version: Annotated[str | None, typer.Option(help="move --alias to this existing version (rollback)")] = None,
    data_dir: DataOpt = None,
) -> None:
    """Register a trained run as a model version and/or move an alias."""
    from asr.registry import set_alias

    from .pipeline import connect_mlflow, register_run

    settings = settings_for(data_dir)
    if run_id:
        version = register_run(settings, run_id, alias)
    elif version and alias:
        connect_mlflow(settings)
        set_alias(settings.model_name, alias, version)
    else:
        raise typer.BadParameter("give --run-id (to register) or --version with --alias (to move an alias)")
    console.print(f"{settings.model_name} version {version}" + (f" is now @{alias}" if alias else ""))


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="16 kHz mono WAV/FLAC files")],
    model: Annotated[str, typer.Option(help="checkpoint path or models:/<name>@<alias>")] = "",
    decoder: Annotated[str, typer.Option(help="beam (with the model's n-gram LM) or greedy")] = "beam",
    hotword: Annotated[list[str], typer.Option(help="bias beam search toward these words (repeatable)")] = [],  # noqa: B006
    data_dir: DataOpt = None,
) -> None:
    """Transcribe files; prints one JSON line per file."""
    from asr.audio import AudioError, load_audio
    from asr.inference import Recognizer

    from .pipeline import connect_mlflow

    settings = settings_for(data_dir)
    connect_mlflow(settings)
    options = {"hotwords": hotword} if hotword else {}
    recognizer = Recognizer.load(model or f"models:/{settings.model_name}@champion", decoder=decoder, **options)
    failed = False
    for f in files:
        try:
            hyp = recognizer.transcribe(load_audio(f))
        except AudioError as e:
            typer.echo(str(e), err=True)  # plain stderr: one line per bad file, never wrapped
            failed = True
            continue
        print(json.dumps({"file": str(f), "text": hyp.text, "confidence": round(hyp.confidence, 3),  # noqa: T201
                          "model_version": recognizer.version}, ensure_ascii=False))
    if failed:
        raise typer.Exit(1)


@app.command("demo")
def demo(
    data_dir: DataOpt = None,
    fresh: Annotated[bool, typer.Option(help="delete the world an earlier demo made in the data dir first")] = False,
    minutes: Annotated[float | None, typer.Option(help="minutes per training (default: the configs')")] = None,
    quick: Annotated[bool, typer.Option(help="tiny plans and a tiny model: the plumbing in a few minutes")] = False,
    airflow_port: Annotated[int, typer.Option(help="port of the demo's Airflow UI")] = 8080,
) -> None:
    """One turn of the loop run by Airflow: baseline on standard speech, a fleet with dialect and older
    owners, drift alerts, curation, re-collection, retrain, gate, shadow/canary, promote; CER per slice
    before and after (docs/loop.md)."""
    from .demo import DemoError, LoopDemoConfig, run_demo

    config = (LoopDemoConfig.quick if quick else LoopDemoConfig)(train_minutes=minutes, airflow_port=airflow_port)
    try:
        run_demo(settings_for(data_dir), console, config, fresh=fresh)
    except DemoError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from None


def _add_groups() -> None:
    from .commands import consent, dataset, db, device, importing, label, monitor, plan, qc, serving, simulate, stack

    groups = {"plan": plan, "import": importing, "qc": qc, "label": label, "dataset": dataset,
              "consent": consent, "db": db, "device": device, "stack": stack, "simulate": simulate}
    groups["monitor"] = monitor
    for name, module in groups.items():
        app.add_typer(module.app, name=name)
    app.command()(serving.serve)
    app.command()(serving.worker)
    from .commands import report

    app.command()(report.report)


_add_groups()

if __name__ == "__main__":
    app()
