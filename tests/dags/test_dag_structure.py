"""The DAG files: they load with no import errors, each has the schedule, tasks, Assets, retries, timeouts
and failure callback the loop needs, and parsing them imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from voiceloop.orchestration import CHALLENGER, DATASET, DRIFT_ALERT, record_failure

EXPECTED = {
    "collect_and_label": ["plans_with_gaps", "collect", "label_tasks"],
    "consolidate_labels": ["freeze_dataset"],
    "retrain": ["train", "gate"],
    "deploy": ["start_shadow", "shadow_verdict", "after_shadow", "roll_back_shadow", "start_canary",
               "canary_verdict", "after_canary", "promote", "roll_back_canary"],
    "curate_feedback": ["curate"],
    "monitor_drift": ["compute", "raise_retrain"],
}


def test_every_dag_loads_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(EXPECTED)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_tasks_retries_timeouts_and_failure_callback(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert sorted(t.task_id for t in dag.tasks) == sorted(EXPECTED[dag_id])
    assert not dag.catchup and dag.max_active_runs == 1 and "voiceloop" in dag.tags
    for t in dag.tasks:
        assert t.retries >= 1, t.task_id
        assert t.execution_timeout is not None and t.execution_timeout <= timedelta(hours=6), t.task_id
        assert record_failure in (t.on_failure_callback if isinstance(t.on_failure_callback, list)
                                  else [t.on_failure_callback]), t.task_id


def test_schedules_and_assets_chain_the_loop(dagbag):
    def uris(assets) -> set[str]:  # noqa: ANN001
        return {a.uri for a in assets}

    schedule = {d: dagbag.get_dag(d).timetable for d in EXPECTED}
    assert schedule["collect_and_label"].expression == schedule["curate_feedback"].expression == "0 0 * * *"
    assert schedule["consolidate_labels"].expression == schedule["monitor_drift"].expression == "0 * * * *"
    # retrain: weekly, or when a dataset version or a retraining alert appears
    retrain = schedule["retrain"]
    assert retrain.timetable.expression == "0 3 * * 0"
    assert {a.uri for a in retrain.asset_condition.objects} == {DATASET.uri, DRIFT_ALERT.uri}
    assert uris(schedule["deploy"].asset_condition.objects) == {CHALLENGER.uri}
    outlets = {(d, t.task_id): uris(t.outlets) for d in EXPECTED for t in dagbag.get_dag(d).tasks if t.outlets}
    assert outlets == {("consolidate_labels", "freeze_dataset"): {DATASET.uri},
                       ("monitor_drift", "raise_retrain"): {DRIFT_ALERT.uri},
                       ("retrain", "gate"): {CHALLENGER.uri}}


def test_deploy_branches_to_promote_or_roll_back(dagbag):
    dag = dagbag.get_dag("deploy")
    assert dag.get_task("after_shadow").downstream_task_ids == {"start_canary", "roll_back_shadow"}
    assert dag.get_task("after_canary").downstream_task_ids == {"promote", "roll_back_canary"}
    assert dag.get_task("shadow_verdict").mode == "poke"  # see dags/deploy.py: reschedule races in Airflow 3.3


def test_parsing_the_dags_imports_nothing_heavy(airflow_home):
    """The scheduler parses every DAG file every few seconds: no torch, MLflow, SQLAlchemy models or pandas."""
    code = ("import sys, runpy, glob\n"
            "for f in sorted(glob.glob('dags/*.py')): runpy.run_path(f)\n"
            "heavy = sorted(m for m in ('torch', 'mlflow', 'collection.models', 'asr.train', 'pandas', 'librosa')"
            " if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout[-500:]
