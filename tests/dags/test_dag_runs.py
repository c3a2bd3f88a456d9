"""``dag.test()`` runs of the loop's DAGs against the embedded stack (a real catalog, real MLflow, real
eSpeak audio, tiny data): what each run writes, that a second run for the same logical date writes nothing
new, and that a task that fails for good leaves an alert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from collection.db import session_scope
from collection.models import Alert, DatasetVersion, LabelTask, ProductionUtterance, Recording
from voiceloop.settings import Settings

LOGICAL = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def loop_env(tmp_path, catalog_url, mlflow_store, monkeypatch, airflow_home) -> Settings:
    """The VOICELOOP_* environment the DAG tasks build their Settings from (dag.test runs them here)."""
    _, root = mlflow_store
    env = {"VOICELOOP_DATA_DIR": str(tmp_path / "data"), "VOICELOOP_CATALOG_URL": catalog_url,
           "VOICELOOP_MLFLOW_URI": f"sqlite:///{root / 'mlflow.db'}",
           "VOICELOOP_MODEL_NAME": f"loop-{uuid.uuid4().hex[:8]}", "VOICELOOP_DATA_PLAN": "tiny"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return Settings()


def run(dagbag, dag_id: str, conf: dict | None = None, when: datetime = LOGICAL) -> dict[str, str]:
    dag_run = dagbag.get_dag(dag_id).test(logical_date=when, run_conf=conf)
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def count(settings: Settings, model) -> int:  # noqa: ANN001
    with session_scope(settings.catalog) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_collect_and_label_fills_the_plan_once(dagbag, loop_env):
    states = run(dagbag, "collect_and_label")
    assert states == {"plans_with_gaps": "success", "collect": "success", "label_tasks": "success"}
    recordings, tasks = count(loop_env, Recording), count(loop_env, LabelTask)
    assert recordings > 0 and tasks >= recordings
    again = run(dagbag, "collect_and_label")  # the same logical date: nothing is missing any more
    assert again["label_tasks"] == "success"
    assert (count(loop_env, Recording), count(loop_env, LabelTask)) == (recordings, tasks)


def test_consolidate_labels_freezes_a_version_only_when_enough_is_reviewed(dagbag, loop_env):
    from voiceloop.collect import collect_for_plan, queue_for_labeling, simulated_labeling

    assert run(dagbag, "consolidate_labels") == {"freeze_dataset": "skipped"}  # nothing reviewed yet
    collect_for_plan(loop_env, "tiny", progress=False)
    queue_for_labeling(loop_env)
    simulated_labeling(loop_env)
    assert run(dagbag, "consolidate_labels", {"min_new": 1000}) == {"freeze_dataset": "skipped"}
    assert run(dagbag, "consolidate_labels", {"min_new": 1}) == {"freeze_dataset": "success"}
    with session_scope(loop_env.catalog) as session:
        (version,) = session.scalars(select(DatasetVersion)).all()
        assert Path(version.manifest_uri).is_dir()
    # the same run again, and a later one: everything reviewed is in the version already
    assert run(dagbag, "consolidate_labels", {"min_new": 1}) == {"freeze_dataset": "skipped"}
    assert count(loop_env, DatasetVersion) == 1


def test_monitor_drift_without_alerts_does_not_call_for_retraining(dagbag, loop_env):
    assert run(dagbag, "monitor_drift") == {"compute": "success", "raise_retrain": "skipped"}


def test_a_task_that_fails_for_good_opens_a_pipeline_alert(dagbag, loop_env, monkeypatch):
    monkeypatch.setenv("VOICELOOP_DATA_PLAN", "no-such-plan")  # plans_with_gaps cannot load it
    states = run(dagbag, "collect_and_label")
    assert states["plans_with_gaps"] == "failed"
    with session_scope(loop_env.catalog) as session:
        (alert,) = session.scalars(select(Alert)).all()
    assert (alert.kind, alert.slice_value, alert.metric, alert.status) == (
        "pipeline_failure", "collect_and_label", "plans_with_gaps", "open")
    assert "no-such-plan" in alert.detail["error"]


# -- deploy: shadow → canary → promote, or roll back ----------------------------------------------------
@pytest.fixture
def release(loop_env, mlflow_store, tmp_path, monkeypatch):
    from _traffic import register_two

    monkeypatch.setenv("VOICELOOP_ROLLOUT_MIN_UTTERANCES", "20")
    monkeypatch.setenv("VOICELOOP_ROLLOUT_MIN_LABELED", "20")
    exp, _ = mlflow_store
    champion, challenger = register_two(exp, tmp_path, loop_env.model_name)
    return loop_env, champion, challenger


def deploy_with_traffic(dagbag, release, challenger_says) -> dict[str, str]:  # noqa: ANN001
    from _traffic import Traffic

    settings, champion, challenger = release
    traffic = Traffic(settings.catalog, settings.model_name, champion, challenger, challenger_says)
    traffic.start()
    try:
        return run(dagbag, "deploy")
    finally:
        traffic.stop()


def test_deploy_promotes_a_better_challenger_through_shadow_and_canary(dagbag, release):
    from asr.registry import alias_version
    from collection.releases import release_history
    from serving.rollout import RolloutState, rollout_state

    settings, champion, challenger = release
    states = deploy_with_traffic(dagbag, release, challenger_says=lambda ref: ref)
    assert states["promote"] == "success", states
    assert states["roll_back_shadow"] == states["roll_back_canary"] == "skipped"
    assert alias_version(settings.model_name, "champion") == challenger
    assert alias_version(settings.model_name, "challenger") is None
    assert rollout_state(settings.model_name) == RolloutState()  # serving back to plain champion traffic
    with session_scope(settings.catalog) as session:
        steps = [(r.stage, r.verdict) for r in reversed(release_history(session, settings.model_name))]
    assert steps == [("shadow", "pass"), ("canary", "pass"), ("promote", "promoted")]


def test_deploy_rolls_back_a_worse_challenger_at_the_shadow_step(dagbag, release):
    from asr.registry import alias_version
    from collection.releases import release_history

    settings, champion, challenger = release
    states = deploy_with_traffic(dagbag, release, challenger_says=lambda ref: "가")
    assert states["roll_back_shadow"] == "success" and states["start_canary"] == "skipped", states
    assert alias_version(settings.model_name, "champion") == champion
    assert alias_version(settings.model_name, "challenger") is None
    with session_scope(settings.catalog) as session:
        history = list(reversed(release_history(session, settings.model_name)))
    assert [(r.stage, r.verdict) for r in history] == [("shadow", "fail"), ("rollback", "rolled_back")]
    assert history[0].summary.startswith("not better overall")


# -- retrain and curate ---------------------------------------------------------------------------------
TINY_TRAINING = """\
backend: conformer_ctc
language: ko
max_minutes: 0
max_steps: 20
model: {d_model: 64, n_heads: 2, ffn_dim: 128, n_layers: 2, conv_kernel: 7, dropout: 0.0}
max_frames: 4000
lr: 0.003
warmup_steps: 5
speed_factors: [1.0]
eval_every_steps: 10
dev_limit: 4
"""


def test_retrain_trains_on_the_newest_version_and_the_first_model_becomes_champion(
        dagbag, loop_env, tiny_studio, tmp_path, monkeypatch):
    from asr.registry import alias_version
    from collection.releases import release_history
    from voiceloop.collect import collect_for_plan, queue_for_labeling, simulated_labeling
    from voiceloop.loop import consolidate_labels
    from voiceloop.release import freeze_gold

    config = tmp_path / "tiny-training.yaml"
    config.write_text(TINY_TRAINING)
    monkeypatch.setenv("VOICELOOP_LOOP_TRAIN_CONFIG", str(config))
    monkeypatch.setenv("VOICELOOP_LOOP_FINETUNE_CONFIG", str(config))
    collect_for_plan(loop_env, "tiny", progress=False)
    queue_for_labeling(loop_env)
    simulated_labeling(loop_env)
    assert consolidate_labels(loop_env, min_new=1)["dataset"]
    freeze_gold(loop_env, {"heldout": tiny_studio / "test_heldout"})

    states = run(dagbag, "retrain")
    # no champion yet: the first model is promoted on its own numbers and becomes @champion (no deploy)
    assert states == {"train": "success", "gate": "skipped"}
    champion = alias_version(loop_env.model_name, "champion")
    assert champion is not None and alias_version(loop_env.model_name, "challenger") is None
    runs = sorted(p for p in (loop_env.data_dir / "runs").iterdir() if not p.name.startswith("."))
    assert len(runs) == 1 and (runs[0] / "model.pt").is_file()
    # the same logical date again: the finished training is reused and the decision stands
    assert run(dagbag, "retrain") == states
    assert sorted(p for p in (loop_env.data_dir / "runs").iterdir() if not p.name.startswith(".")) == runs
    assert alias_version(loop_env.model_name, "champion") == champion
    with session_scope(loop_env.catalog) as session:
        assert [(r.stage, r.verdict) for r in release_history(session, loop_env.model_name)] == [("gate", "pass")]
    # a later run (the weekly tick, a drift alert) with no new dataset version: nothing to learn from
    assert run(dagbag, "retrain", when=LOGICAL.replace(day=29)) == {"train": "skipped", "gate": "skipped"}
    assert sorted(p for p in (loop_env.data_dir / "runs").iterdir() if not p.name.startswith(".")) == runs


def test_curate_feedback_queues_consented_audio_and_plans_recollection_for_weak_slices(dagbag, loop_env):
    import yaml

    from voiceloop.collect import collect_for_plan

    collect_for_plan(loop_env, "tiny", progress=False)  # recordings, so production utterances can point at them
    with session_scope(loop_env.catalog) as session:
        recordings = session.scalars(select(Recording.id).order_by(Recording.id)).all()
        for i, rid in enumerate(recordings[:4]):
            session.add(ProductionUtterance(request_id=f"req-{i}", device_id="dev-1", model_version="m/1",
                                            hypothesis="불 켜 줘", confidence=0.3 if i % 2 else 0.95,
                                            recording_id=rid, dialect="gyeongsang" if i < 2 else "standard",
                                            created_at=LOGICAL.replace(hour=6)))
        session.add(Alert(kind="wer_regression", slice_key="dialect", slice_value="gyeongsang", metric="wer",
                          window_end=LOGICAL.replace(hour=5), status="open", detail={}))
    states = run(dagbag, "curate_feedback", when=LOGICAL.replace(hour=23))
    assert states == {"curate": "success"}
    plan_path = loop_env.data_dir / "plans" / "recollect-20261130.yaml"
    plan = yaml.safe_load(plan_path.read_text())
    assert plan["parent"] == "tiny" and plan["quota_scope"] == "plan"
    assert {c["dialect"] for c in plan["cells"]} == {"gyeongsang"}
    with session_scope(loop_env.catalog) as session:
        reasons = sorted(session.scalars(select(LabelTask.reason)).all())
    # req-1 and req-3 were unsure (low_confidence); req-0 and req-1 are Gyeongsang, the alerting slice, so
    # req-1's open task moves up to drift
    assert reasons == ["drift", "drift", "low_confidence"]
    before = plan_path.read_text()
    assert run(dagbag, "curate_feedback", when=LOGICAL.replace(hour=23)) == states  # idempotent
    assert plan_path.read_text() == before
    with session_scope(loop_env.catalog) as session:
        assert sorted(session.scalars(select(LabelTask.reason)).all()) == reasons


def test_a_training_task_killed_halfway_leaves_nothing_half_written(dagbag, loop_env, tiny_studio, tmp_path,
                                                                     monkeypatch):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from asr.backends import load_checkpoint
    from asr.registry import alias_version
    from voiceloop.collect import collect_for_plan, queue_for_labeling, simulated_labeling
    from voiceloop.loop import consolidate_labels
    from voiceloop.release import freeze_gold

    config = tmp_path / "killable.yaml"
    config.write_text(TINY_TRAINING.replace("max_steps: 20", "max_steps: 150")
                      + "checkpoint_every_minutes: 0.002\n")  # a checkpoint every ~0.1 s
    monkeypatch.setenv("VOICELOOP_LOOP_TRAIN_CONFIG", str(config))
    collect_for_plan(loop_env, "tiny", progress=False)
    queue_for_labeling(loop_env)
    simulated_labeling(loop_env)
    consolidate_labels(loop_env, min_new=1)
    freeze_gold(loop_env, {"heldout": tiny_studio / "test_heldout"})

    code = ("from voiceloop.loop import train_candidate\nfrom voiceloop.settings import Settings\n"
            "s = Settings()\ntrain_candidate(s, None, config=s.loop_train_config)\n")
    worker = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    runs = loop_env.data_dir / "runs"
    deadline = time.monotonic() + 180
    while not list(runs.glob("*/last.pt")) and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    assert worker.wait(timeout=30) == -signal.SIGKILL  # killed inside the training loop, not finished
    (out,) = runs.iterdir()
    assert not (out / "finished.json").exists() and not (out / "model.pt").exists()  # nothing claims to be done
    load_checkpoint(out / "last.pt")  # what is on disk was written whole (temp file + rename)
    # (a kill during a write may leave that write's temp file: never read, and replaced by the retry's)
    assert alias_version(loop_env.model_name, "champion") is None

    # the task's retry: training resumes from the last checkpoint in the same directory and finishes;
    # exactly one model comes out
    states = run(dagbag, "retrain")
    assert states["train"] == "success" and [p for p in runs.iterdir() if not p.name.startswith(".")] == [out]
    assert json.loads((out / "finished.json").read_text())["steps"] == 150
    assert not list(out.glob("*.tmp"))
    assert alias_version(loop_env.model_name, "champion") == "1"
