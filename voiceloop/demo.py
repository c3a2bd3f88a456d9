"""``voiceloop demo`` (``make demo``): one turn of the whole loop, run by Airflow itself (the DAG runs are
triggered through Airflow's REST API and Asset events; nothing here calls a loop step directly).

    baseline      collect_and_label (standard speakers under 60) → simulated labelers → consolidate_labels
                  → (dataset Asset) retrain → the first model becomes @champion
    serve         simulated devices — standard, Gyeongsang, Jeolla, 60s, 70s+ owners — over HTTP, WebSocket
                  and Kafka; owners complain about wrong answers
    notice        monitor_drift → alerts on the weak slices; curate_feedback → their audio to labeling and a
                  re-collection plan; collect_and_label fills it; simulated labelers
    retrain       consolidate_labels → (dataset Asset) retrain: the champion fine-tuned, gated on the frozen
                  gold set + recent production → @challenger
    deploy        (Asset) deploy: shadow → canary → promote, with devices and labelers busy meanwhile
    report        each slice's CER before and after (a table and a figure), the dashboard, an HTML report

Simulated labelers and devices stand in for people and hardware (they are marked simulated in the
catalog). Progress: one line per phase with its duration, and what Airflow is doing while the demo waits.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .efficacy import Phases, gap_rows, gap_table, plot_gaps, verdict
from .settings import Settings

log = logging.getLogger(__name__)

GOLD_PLAN = "demo"  # the studio plan whose test speakers are the gold set (collection/plans/demo.yaml)
GOLD_SPLITS = {"standard_seen": "test_seen", "standard_unseen": "test_unseen", "heldout": "test_heldout"}
TRAFFIC_PLAN = "loop-traffic"  # studio speakers of the fleet (collection/plans/loop-traffic.yaml)
DATA_PLAN = "loop"  # what is collected first (collection/dataplans/loop.yaml)
FLEET = [  # owner profiles, dealt round robin: a fifth of the devices per slice
    {"region": "standard", "age_band": "30s"}, {"region": "gyeongsang", "age_band": "40s"},
    {"region": "jeolla", "age_band": "30s"}, {"region": "standard", "age_band": "60s"},
    {"region": "standard", "age_band": "70s+"},
]
SPEAKERS = {"standard": {"dialect": "standard", "age_band": ("20s", "30s", "40s", "50s")},
            "gyeongsang": {"dialect": "gyeongsang"}, "jeolla": {"dialect": "jeolla"},
            "60s": {"dialect": "standard", "age_band": "60s"}, "70s+": {"dialect": "standard", "age_band": "70s+"}}
STANDARD = "standard (under 60)"
SLICES = {  # the demo's before/after table: name -> the gold utterances it holds
    STANDARD: lambda u: u.get("dialect") == "standard" and u.get("age_band") in ("20s", "30s", "40s",
                                                                                              "50s"),
    "dialect=gyeongsang": lambda u: u.get("dialect") == "gyeongsang",
    "dialect=jeolla": lambda u: u.get("dialect") == "jeolla",
    "age_band=60s": lambda u: u.get("age_band") == "60s",
    "age_band=70s+": lambda u: u.get("age_band") == "70s+",
}


@dataclass(frozen=True)
class LoopDemoConfig:
    train_minutes: float | None = None  # per training (None: the configs' own budgets)
    per_cell: int = 16  # re-collected utterances per cell of a weak slice (bench/loop_efficacy.py: 6 too few)
    devices: int = 20
    traffic: int = 200  # utterances the fleet sends before the drift job looks
    airflow_port: int = 8080
    labelers: int = 2
    # smaller worlds for a quick look (and the smoke test): plans and training configs by name or path
    data_plan: str = DATA_PLAN
    gold_plan: str = GOLD_PLAN
    train_config: str = "champion"
    finetune_config: str = "finetune"

    @classmethod
    def quick(cls, **overrides: Any) -> LoopDemoConfig:  # noqa: ANN401
        """Tiny plans and a tiny model: the plumbing in a few minutes (its CER numbers mean nothing)."""
        return cls(**{"data_plan": "tiny", "gold_plan": "tiny", "train_config": "tiny", "finetune_config": "tiny",
                      "devices": 10, "traffic": 50, "per_cell": 2, **overrides})


def demo_settings(settings: Settings, config: LoopDemoConfig) -> Settings:
    """The demo's settings — what every Airflow task of the demo sees (the stack passes them through)."""
    return settings.model_copy(update={
        "dag_schedules": False, "dag_retry_delay_s": 10,
        "decoder": "beam",  # the product's decoder (beam + the grammar LM): devices get it, the gate judges it
        "data_plan": config.data_plan, "loop_train_minutes": config.train_minutes, "loop_min_new_labels": 1,
        "loop_train_config": config.train_config, "loop_finetune_config": config.finetune_config,
        "loop_recollect_per_cell": config.per_cell, "rollout_min_utterances": 40, "rollout_min_labeled": 30,
        "rollout_poke_s": 5, "rollout_canary_share": 0.5, "gate_min_slice_n": 20,
        "feedback_rate_per_minute": 60.0, "feedback_burst": 10, "alert_voc_min_count": 3,
        "device_rate_per_second": 50.0, "device_burst": 100})


def slice_cers(report: Any) -> dict[str, tuple[int, float]]:  # noqa: ANN401 - asr.evaluate.EvalReport
    """(n, CER) per demo slice from an evaluation's per-utterance records."""
    from asr.evaluate import edit_counts

    out = {}
    for name, holds in SLICES.items():
        rows = [u for u in report.utterances if holds(u)]
        counts = [edit_counts(u["ref"], u["hyp"]) for u in rows]
        chars = sum(c[3] for c in counts)
        out[name] = (len(rows), sum(c[2] for c in counts) / chars if chars else float("nan"))
    return out


class DemoError(Exception):
    """The demo cannot start here; the message says what to do."""


MARKER = ".voiceloop-demo"  # what a data dir the demo made holds: only such a dir is ever deleted


def prepare_data_dir(settings: Settings, fresh: bool) -> None:
    """The demo tells its story from an empty data dir. ``fresh`` deletes one an earlier demo made (its
    Airflow stopped first); a data dir holding anything else is never deleted."""
    from infra import stack

    data = settings.data_dir
    if data.exists() and any(data.iterdir()):
        if not (data / MARKER).exists():
            raise DemoError(f"{data} holds data the demo did not make; the demo starts from an empty data dir "
                            "(choose another with --data-dir)")
        if not fresh:
            raise DemoError(f"{data} holds an earlier demo's world; --fresh deletes it and starts again")
        stack.down(settings)
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    (data / MARKER).write_text("made by voiceloop demo; `voiceloop demo --fresh` may delete this directory\n")


def run_demo(settings: Settings, console: Console, config: LoopDemoConfig = LoopDemoConfig(), *,
             fresh: bool = False) -> dict:
    from collection.studio import synthesize_plan
    from infra import airflow, stack
    from serving.simulator import what_was_said

    from .collect import plan_progress, simulated_labeling
    from .release import freeze_gold

    s = demo_settings(settings, config)
    prepare_data_dir(s, fresh)
    phases = Phases(console)
    with phases.phase("start Airflow (standalone) for the data dir"):
        stack.up(s, {"airflow": config.airflow_port}, ("airflow",))
        client = airflow.client_for(s)
        for dag_id in ("retrain", "deploy"):  # Asset-triggered: unpaused before their Assets get events
            airflow.unpause(client, dag_id)
        console.print(airflow.login_help(s, airflow.stack_url(s)))

    with phases.phase("freeze the gold evaluation set (studio test speakers, never trained on)"):
        studio = s.data_dir / "studio"
        splits = synthesize_plan(config.gold_plan, studio, progress=True, splits=GOLD_SPLITS.values())
        freeze_gold(s, {part: splits[split] for part, split in GOLD_SPLITS.items()})

    def trigger(dag_id: str, conf: dict | None = None) -> None:
        result = airflow.trigger_and_wait(s, dag_id, conf=conf, timeout_s=3600)
        pause(dag_id)  # back to how the stack starts: the demo decides when scheduled DAGs run
        console.print(f"  {dag_id}: {result.state} " + " ".join(f"{t}={st}" for t, st in result.tasks.items()))

    def pause(dag_id: str) -> None:
        client.call("PATCH", f"/dags/{dag_id}", {"is_paused": True})

    def follow(dag_id: str, after: datetime) -> airflow.DagRunResult:
        result = airflow.wait_for_next_run(s, dag_id, after, timeout_s=3600)
        console.print(f"  {dag_id} (Asset-triggered): {result.state} "
                      + " ".join(f"{t}={st}" for t, st in result.tasks.items()))
        return result

    heard: dict[str, str] = {}  # production audio → what the simulated speaker said (the people's ears)

    def people() -> None:
        done = simulated_labeling(s, labelers=config.labelers, heard=heard)
        console.print(f"  simulated labelers: {done.submitted} transcripts, {done.reviewed} reviewed")

    with phases.phase("baseline: collect standard speech, label it, train the first model (Airflow)"):
        trigger("collect_and_label")
        people()
        t0 = datetime.now(UTC)
        trigger("consolidate_labels")
        follow("retrain", t0)

    fleet = _fleet(s, config)
    with phases.phase("serve the fleet: standard, Gyeongsang, Jeolla, 60s, 70s+ owners (they complain)"), \
            _serving(s) as (url, bootstrap):
        summary = _traffic(s, fleet, url, bootstrap, config.traffic, complain_share=0.8)
        heard.update(what_was_said(s.catalog, summary.outcomes))
        console.print(summary.table("the fleet's commands (the champion trained on standard speech)"))

    with phases.phase("notice: drift alerts, curation, re-collection, labeling (Airflow)"):
        trigger("monitor_drift")
        trigger("curate_feedback")
        trigger("collect_and_label")
        people()

    # The fleet is quiet while the model trains: on this 2-core machine serving and training would starve
    # each other (a first run fine-tuned 8x slower beside the busy devices); in production, training has
    # its own worker. The deploy run waits for live traffic, which starts again right after the gate.
    with phases.phase("retrain and gate (Airflow): the champion fine-tuned on the new dataset version"):
        t0 = datetime.now(UTC)
        trigger("consolidate_labels")
        retrain = follow("retrain", t0)
    deploy = None
    if retrain.tasks.get("gate") != "success":  # refused (or nothing new to learn): the decision says why
        console.print(f"[yellow]  no deploy: {_last_decision(s)}")
    else:
        with phases.phase("deploy: shadow, canary, promote (Airflow, with devices talking and people labeling)"), \
                _serving(s) as (url, bootstrap), _busy_world(s, fleet, url, bootstrap, heard, people_every_s=20):
            deploy = follow("deploy", t0)

    with phases.phase("report: each slice before and after"):
        rows, figure = _before_after(s, console)
        report = _html_report(s)
        _, plan_png = plan_progress(s, config.data_plan, s.data_dir / "reports" / "plan_status.png")
    console.print(phases.table())
    console.print(_where(s, report, figure, plan_png))
    return {"phases": list(phases.seconds.items()), "deploy": deploy.tasks if deploy else None,
            "slices": [asdict(r) for r in rows]}


def _where(s: Settings, report: Path, figure: Path | None, plan_png: Path | None) -> Table:
    from infra import airflow

    where = Table(show_header=False, title="where everything landed")
    where.add_row("Airflow (still running)", airflow.login_help(s, airflow.stack_url(s)) +
                  f"\n  stop it: voiceloop stack down --data-dir {s.data_dir}")
    where.add_row("ops dashboard", f"voiceloop serve --data-dir {s.data_dir} → /ops (Drift, VOC, Releases: "
                  "each gate and rollout step with its numbers)")
    where.add_row("HTML report", str(report))
    where.add_row("before/after figure", str(figure or "—"))
    where.add_row("data plan progress", str(plan_png or "—"))
    where.add_row("MLflow UI", f"mlflow ui --backend-store-uri {s.tracking_uri} "
                  f"--default-artifact-root {Path(s.artifact_root).resolve()}")
    where.add_row("catalog", s.catalog)
    where.add_row("dataset versions", str(s.data_dir / "datasets"))
    return where


def _last_decision(s: Settings) -> str:
    from collection.db import session_scope
    from collection.releases import release_history

    with session_scope(s.catalog) as session:
        history = release_history(session, s.model_name, limit=1)
        return f"{history[0].stage} {history[0].verdict}: {history[0].summary}" if history else "no decision recorded"


def _before_after(s: Settings, console: Console) -> tuple[list, Path | None]:
    """The first champion's and the promoted model's CER per slice on the gold set (the gate's cached
    evaluations): the table, and the figure's path."""
    from sqlalchemy import select

    from collection.db import session_scope
    from collection.models import ReleaseDecision

    from .release import eval_set, model_report

    with session_scope(s.catalog) as session:
        steps = session.scalars(select(ReleaseDecision).where(ReleaseDecision.model_name == s.model_name)
                                .order_by(ReleaseDecision.created_at)).all()
        first = next((r.model_version for r in steps if r.stage == "gate" and r.champion_version is None), None)
        promoted = next((r.model_version for r in reversed(steps) if r.stage == "promote"), None)
    if first is None or promoted is None:
        console.print(f"[yellow]no before/after: first model {first}, promoted {promoted}")
        return [], None
    gold = eval_set(s)
    before, _ = model_report(s, f"models:/{s.model_name}/{first}", gold, decoder=s.decoder)
    after, _ = model_report(s, f"models:/{s.model_name}/{promoted}", gold, decoder=s.decoder)
    rows = gap_rows(slice_cers(before), slice_cers(after), STANDARD)
    title = f"one turn of the loop, on the frozen gold set: {s.model_name} {first} → {promoted}"
    console.print(gap_table(rows, f"{title} (CER, {s.decoder} decoding)"))
    console.print(verdict(rows))
    return rows, plot_gaps(rows, s.data_dir / "reports" / "loop-demo.png", title, s.decoder)


def _html_report(s: Settings) -> Path:
    from collection.db import session_scope
    from monitoring.report import write_report
    from monitoring.timerange import TimeRange

    with session_scope(s.catalog) as session:
        return write_report(session, TimeRange.parse("1d"), s.data_dir / "reports" / "loop-demo.html",
                            model_name=s.model_name)


def _fleet(s: Settings, config: LoopDemoConfig) -> list:
    from serving.simulator import register_sim_devices

    return register_sim_devices(s.catalog, config.devices, consent_share=1.0, profiles=FLEET, human_review=True)


@contextmanager
def _serving(s: Settings) -> Iterator[tuple[str, str]]:
    """The device API (uvicorn) and a Kafka worker (on an embedded broker), both following the registry."""
    from infra.stack import start_broker
    from serving.api.background import serve_in_thread
    from serving.api.main import create_app
    from serving.worker import worker_in_thread

    from .serving import model_manager_for

    broker = start_broker(log_path=s.data_dir / "demo-tansu.log")
    try:
        served = s.model_copy(update={"kafka_bootstrap": broker.bootstrap, "model_poll_seconds": 2.0})
        app = create_app(served, plan=DATA_PLAN, models=model_manager_for(served))
        with serve_in_thread(app) as url, worker_in_thread(served, model_manager_for(served)):
            yield url, broker.bootstrap
    finally:
        broker.stop()


def _traffic(s: Settings, fleet: list, url: str, bootstrap: str, count: int, complain_share: float) -> Any:  # noqa: ANN401
    """Each owner speaks commands of a studio speaker of their own slice."""
    from serving.simulator import SimulationConfig, run_simulation, studio_commands

    by_slice = {}
    for name, speaker in SPEAKERS.items():
        by_slice[name] = studio_commands(TRAFFIC_PLAN, s.data_dir, max(1, count // len(SPEAKERS)), speaker=speaker)
    keys = list(SPEAKERS)
    commands = [by_slice[keys[i % len(keys)]][(i // len(keys)) % len(by_slice[keys[i % len(keys)]])]
                for i in range(count)]
    config = SimulationConfig(url=url, via=("http", "ws", "kafka"), kafka_bootstrap=bootstrap, timeout_s=60,
                              complain_share=complain_share, dither=True)
    return run_simulation(config, fleet, commands, language=s.language, progress=True)


@contextmanager
def _busy_world(s: Settings, fleet: list, url: str, bootstrap: str, heard: dict[str, str],
                people_every_s: float) -> Iterator[None]:
    """While a release waits for live traffic: devices keep talking and people keep labeling."""
    from serving.simulator import what_was_said

    from .collect import queue_for_labeling, simulated_labeling

    stop = threading.Event()

    def loop(step: Callable[[], None], every_s: float) -> None:
        while not stop.wait(every_s):
            try:
                step()
            except Exception:  # the world goes on; the DAG run says what failed
                log.exception("background %s failed", step.__name__)

    def talk() -> None:
        heard.update(what_was_said(s.catalog, _traffic(s, fleet, url, bootstrap, 50, complain_share=0.0).outcomes))

    def label() -> None:
        queue_for_labeling(s)
        simulated_labeling(s, heard=dict(heard))

    threads = [threading.Thread(target=loop, args=(talk, 1.0), daemon=True),
               threading.Thread(target=loop, args=(label, people_every_s), daemon=True)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)


__all__ = ["DemoError", "LoopDemoConfig", "demo_settings", "prepare_data_dir", "run_demo", "slice_cers"]
