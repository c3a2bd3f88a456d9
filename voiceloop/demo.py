"""``voiceloop demo``: synthesize → train → evaluate per slice → register champion → transcribe →
collect for the data plan, label (simulated people), freeze a dataset version."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from asr.audio import load_audio
from asr.inference import Recognizer
from asr.plots import plot_learning_curve, plot_slices
from asr.train import load_train_config
from collection.db import session_scope
from collection.labeling import labeler_report, labeler_table
from collection.manifest import load_split
from collection.quota import totals
from collection.studio import synthesize_plan

from .collect import collect_for_plan, freeze_dataset, plan_progress, queue_for_labeling, simulated_labeling
from .pipeline import evaluate_splits, register_run, train_model
from .settings import Settings

TEST_SPLITS = ["test_seen", "test_unseen", "test_heldout"]
DATA_PLAN = "demo"  # collection/dataplans/demo.yaml


def serve_simulated_devices(settings: Settings, plan: str, console: Console, utterances: int = 24) -> int:
    """The device API (uvicorn, a thread) and a Kafka worker (a thread, on an embedded tansu broker), both
    serving the registry's champion; simulated speakers send studio commands over all three channels.
    Returns how many were answered."""
    from infra.stack import start_broker
    from serving.api.background import serve_in_thread
    from serving.api.main import create_app
    from serving.simulator import SimulationConfig, register_sim_devices, run_simulation, studio_commands
    from serving.worker import worker_in_thread

    from .serving import model_manager_for

    commands = studio_commands(plan, settings.data_dir, utterances)
    fleet = register_sim_devices(settings.catalog, 4, consent_share=0.5)
    broker = start_broker(log_path=settings.data_dir / "demo-tansu.log")
    try:
        served = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
        app = create_app(served, plan=plan, models=model_manager_for(served))
        with serve_in_thread(app) as url, worker_in_thread(served, model_manager_for(served)):
            config = SimulationConfig(url=url, via=("http", "ws", "kafka"), kafka_bootstrap=broker.bootstrap,
                                      timeout_s=60)
            summary = run_simulation(config, fleet, commands, language=settings.language, progress=True)
    finally:
        broker.stop()
    console.print(summary.table(f"{len(fleet)} simulated speakers ({sum(d.consented for d in fleet)} consent to "
                                "keeping their audio), one command each in turn"))
    for line in summary.first_errors():
        console.print(f"[red]{line}")
    return sum(c.answered for c in summary.channels.values())


def run_demo(settings: Settings, minutes: float, plan: str, console: Console) -> None:
    data = settings.data_dir
    studio, run_dir, eval_dir = data / "studio", data / "runs" / "baseline", data / "eval" / "baseline"

    console.rule("[bold]1/7 synthesize speech from the data plan")
    synthesize_plan(plan, studio)

    console.rule(f"[bold]2/7 train a baseline Conformer-CTC ({minutes:g} training minutes)")
    cfg = load_train_config("baseline", max_minutes=minutes)
    trained = train_model(settings, studio, cfg, run_dir, resume=True, run_name="demo-baseline")
    curve = plot_learning_curve({"baseline": trained.result.history}, eval_dir / "learning_curve.png")

    console.rule("[bold]3/7 evaluate per slice")
    reports = evaluate_splits(settings, str(trained.result.checkpoint), studio, TEST_SPLITS, eval_dir,
                              run_id=trained.run_id)
    for split, report in reports.items():
        report.print(title=split, console=console)
    heldout = reports["test_heldout"]
    rows = [(f"{k}={v}", m.cer, *m.cer_ci) for k, vals in heldout.slices.items() for v, m in sorted(vals.items())]
    slices_png = plot_slices(rows, eval_dir / "cer_by_slice.png", "CER by slice (test_heldout)")

    console.rule("[bold]4/7 register as champion")
    version = register_run(settings, trained.run_id, "champion")
    uri = f"models:/{settings.model_name}@champion"
    console.print(f"{settings.model_name} version {version} is now @champion")

    console.rule(f"[bold]5/7 transcribe a few files with {uri}")
    recognizer = Recognizer.load(uri, decoder="beam")
    table = Table("file", "said", "heard", "confidence")
    for utt in load_split(studio / "test_unseen")[:5]:
        hyp = recognizer.transcribe(load_audio(utt.audio_path))
        table.add_row(utt.audio_path.name, utt.text, hyp.text, f"{hyp.confidence:.2f}")
    console.print(table)

    console.rule("[bold]6/7 collect for the data plan, label, freeze a dataset version")
    collected = collect_for_plan(settings, DATA_PLAN)
    console.print(f"studio → catalog: {collected.accepted} accepted, {collected.rejected} refused by QC, "
                  f"{collected.remaining} utterances still missing from plan {DATA_PLAN!r}")
    queued = queue_for_labeling(settings, uri)
    people = simulated_labeling(settings)
    console.print(f"{queued} new label tasks; open tasks pre-labelled by {uri}; simulated labelers "
                  f"{', '.join(people.labelers)} submitted {people.submitted}, the simulated reviewer decided "
                  f"{people.reviewed} (agreeing double transcriptions need no reviewer)")
    with session_scope(settings.catalog) as session:
        console.print(labeler_table(labeler_report(session)))
    dataset = freeze_dataset(settings)
    console.print(f"dataset version {dataset.id} (sha256 {dataset.content_hash[:16]}…): "
                  + ", ".join(f"{split} {sum(c.get('dialect', {}).values())}" for split, c in dataset.counts.items()))
    statuses, plan_png = plan_progress(settings, DATA_PLAN, eval_dir.parent / "plan_status.png")
    target, have, labeled = totals(statuses)
    console.print(f"plan {DATA_PLAN!r}: {have}/{target} collected, {labeled}/{target} with reviewed labels")

    console.rule(f"[bold]7/7 serve simulated speakers with {uri}: HTTP, WebSocket and Kafka")
    served = serve_simulated_devices(settings, plan, console)

    console.rule("[bold]where everything landed")
    where = Table(show_header=False)
    where.add_row("audio + manifests", str(studio))
    where.add_row("checkpoint", str(trained.result.checkpoint))
    where.add_row("evaluation JSON", ", ".join(str(eval_dir / f"{s}.json") for s in TEST_SPLITS))
    where.add_row("plots", f"{curve}, {slices_png}")
    where.add_row("MLflow run", trained.run_id)
    where.add_row("MLflow UI", f"mlflow ui --backend-store-uri {settings.tracking_uri} "
                  f"--default-artifact-root {Path(settings.artifact_root).resolve()}")
    where.add_row("transcribe", f"voiceloop transcribe --model {uri} FILE.wav")
    where.add_row("catalog", settings.catalog)
    where.add_row("audio store", settings.audio_store)
    where.add_row("dataset version", dataset.manifest_uri)
    where.add_row("data plan progress", f"{plan_png}  (voiceloop plan status / plan gaps)")
    where.add_row("served requests", f"{served} simulated commands in the catalog's production_utterances "
                  "(voiceloop serve · voiceloop stack up · voiceloop worker · voiceloop simulate devices)")
    where.add_row("web pages", "voiceloop serve → /v1 (device API), /record, /label, /review, /admin "
                  "(first admin: voiceloop label users add NAME --role admin)")
    console.print(where)
