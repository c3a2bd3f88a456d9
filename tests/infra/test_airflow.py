"""Airflow in the embedded stack: a real metadata DB, ``DagBag`` + ``dag.test()``, and `airflow standalone`
started by `voiceloop stack up --airflow`, a DAG triggered through its REST API, and nothing left after `down`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra import airflow, stack
from voiceloop.cli import app
from voiceloop.settings import Settings

DAG_ID = "voiceloop_harness_check"
FAILING_DAG_ID = "voiceloop_harness_fails"
FOLLOWING_DAG_ID = "voiceloop_harness_follows"  # scheduled on the Asset DAG_ID's `double` updates


def write_dags(folder: Path, out: Path) -> Path:
    """Three tiny DAGs: ``make`` → XCom → ``double`` (writes what it got to ``out``, updates an Asset), one
    that runs on that Asset's updates, and one whose task fails."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "harness_check.py"
    path.write_text(textwrap.dedent(f'''
        """Proves the harness: the first task's return value reaches the second through XCom."""
        from __future__ import annotations

        import pendulum
        from airflow.sdk import Asset, dag, task

        HARNESS = Asset(name="voiceloop_harness", uri="voiceloop://tests/harness")


        @dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
        def harness_check():
            @task
            def make() -> int:
                return 21

            @task(outlets=[HARNESS])
            def double(value: int) -> int:
                import json
                import os
                from pathlib import Path

                report = {{"value": value * 2, "data_dir": os.environ.get("VOICELOOP_DATA_DIR")}}
                Path({str(out)!r}).write_text(json.dumps(report))
                return value * 2

            double(make())


        @dag(dag_id="{FOLLOWING_DAG_ID}", schedule=[HARNESS], start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
             catchup=False)
        def harness_follows():
            @task
            def follow() -> str:
                return "followed"

            follow()


        @dag(dag_id="{FAILING_DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
             catchup=False)
        def harness_fails():
            @task
            def boom() -> None:
                raise ValueError("this task fails on purpose")

            boom()


        harness_check()
        harness_follows()
        harness_fails()
    '''))
    return path


# -- environment and metadata DB -----------------------------------------------------------------
def test_airflow_env_points_every_process_at_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "data", drift_baseline_splits=["test_seen"], canary_share=0.25)
    env = airflow.airflow_env(settings, port=18080, log_server_ports=(18793, 18794))
    home = (tmp_path / "data" / "airflow").resolve()
    assert env["AIRFLOW_HOME"] == str(home) == str(airflow.airflow_home(settings))
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(Path(__file__).resolve().parents[2] / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False" and env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080" and env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 2

    # A DAG task builds its Settings from this environment: it must equal the stack's.
    for key, value in env.items():
        if key.startswith("VOICELOOP_"):
            monkeypatch.setenv(key, value)
    assert Settings().model_dump() == settings.model_copy(update={"data_dir": settings.data_dir.resolve()}).model_dump()


def test_migrate_creates_a_metadata_db_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert airflow.migrate(settings) is True
    home = airflow.airflow_home(settings)
    with sqlite3.connect(home / "airflow.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
        assert {"dag", "dag_run", "task_instance", "xcom"} <= tables
        assert db.execute("select version_num from alembic_version").fetchone()
    assert (home / "airflow.cfg").is_file()  # the secrets every Airflow process shares
    # Airflow itself agrees the DB is at head.
    check = subprocess.run(airflow.airflow_command("db", "check-migrations", "-t", "0"), capture_output=True,
                           text=True, env={**os.environ, **airflow.airflow_env(settings)}, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert airflow.migrate(settings) is False  # at head: skipped

    login = airflow.admin_login(settings)
    assert login.user == "admin" and len(login.password) >= 12
    assert json.loads(login.password_file.read_text()) == {"admin": login.password}
    assert stat.S_IMODE(login.password_file.stat().st_mode) == 0o600
    assert airflow.admin_login(settings).password == login.password  # generated once


# -- DagBag + dag.test(): the harness of tests/dags -------------------------------------------------
# Run in a fresh Python process: dag.test() only runs DAGs of the *configured* dags folder (it syncs that
# bundle to the DB first), and this process's Airflow may already point at the repository's dags/
# (tests/dags/conftest.py; Airflow's configuration cannot change once imported).
DAG_TEST = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
run = bag.get_dag(sys.argv[2]).test()
tasks = {ti.task_id: ti.state for ti in run.get_task_instances()}
print("RESULT " + json.dumps({"import_errors": bag.import_errors, "dag_ids": sorted(bag.dag_ids),
                              "state": run.state, "run_id": run.run_id, "tasks": tasks}))
"""


def test_a_dag_file_loads_and_runs_with_dag_test(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    airflow.migrate(settings)
    folder, out = tmp_path / "dags", tmp_path / "double.json"
    write_dags(folder, out)
    env = {**os.environ, **airflow.airflow_env(settings, dags_folder=folder)}
    done = subprocess.run([sys.executable, "-c", DAG_TEST, str(folder), DAG_ID], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert report["import_errors"] == {}
    assert report["dag_ids"] == sorted([DAG_ID, FOLLOWING_DAG_ID, FAILING_DAG_ID])
    assert report["state"] == "success" and report["tasks"] == {"make": "success", "double": "success"}
    assert json.loads(out.read_text())["value"] == 42  # 21 reached `double` through XCom
    with sqlite3.connect(airflow.airflow_home(settings) / "airflow.db") as db:
        xcoms = dict(db.execute("select task_id, value from xcom where dag_id = ? and run_id = ? "
                                "and key = 'return_value'", (DAG_ID, report["run_id"])).fetchall())
    assert xcoms == {"make": 21, "double": 42}


# -- the stack: airflow standalone, REST API, down -------------------------------------------------
def processes_of(home: Path) -> list[str]:
    """Live processes whose environment carries AIRFLOW_HOME=<home> (every Airflow process of that stack)."""
    needle = f"AIRFLOW_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command}")
        except OSError:
            continue  # gone meanwhile, or not ours
    return found


@pytest.mark.slow
def test_stack_up_airflow_runs_a_triggered_dag_and_down_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to find the processes Airflow leaves behind")
    settings = Settings(data_dir=tmp_path / "data")
    folder, out = tmp_path / "dags", tmp_path / "double.json"
    write_dags(folder, out)
    (folder / "broken_dag.py").write_text("from airflow.sdk import dag\nimport no_such_module_here\n")
    # The stack reads the repository's dags/; this test's DAGs live in a temp folder instead.
    spec = stack.SERVICES["airflow"]
    monkeypatch.setitem(stack.SERVICES, "airflow", dataclasses.replace(
        spec, environment=lambda s, port: airflow.airflow_env(s, port, dags_folder=folder,
                                                              log_server_ports=(stack.free_port(), stack.free_port()))))
    home = airflow.airflow_home(settings)
    kafka_port, airflow_port = stack.free_port(), stack.free_port()
    cli = ["--data-dir", str(settings.data_dir)]
    try:
        result = CliRunner().invoke(app, ["stack", "up", "--no-mlflow", "--airflow", "--kafka-port", str(kafka_port),
                                          "--airflow-port", str(airflow_port), *cli])
        assert result.exit_code == 0, result.output
        url = f"http://127.0.0.1:{airflow_port}"
        assert f"Airflow UI: {url}" in result.output and str(airflow.password_file(settings)) in result.output
        assert airflow.airflow_answers(url)

        airflow.unpause(airflow.client_for(settings), FOLLOWING_DAG_ID)  # paused DAGs ignore Asset events
        triggered = datetime.now(UTC)
        run = airflow.trigger_and_wait(settings, DAG_ID, conf={"note": "from the test"}, timeout_s=300)
        assert run.state == "success" and run.tasks == {"make": "success", "double": "success"}
        report = json.loads(out.read_text())
        assert report == {"value": 42, "data_dir": str(settings.data_dir.resolve())}  # XCom; VOICELOOP_* reach tasks
        follows = airflow.wait_for_next_run(settings, FOLLOWING_DAG_ID, after=triggered, timeout_s=300)
        assert follows.state == "success" and follows.tasks == {"follow": "success"}

        with pytest.raises(airflow.DagRunFailed, match="boom") as failed:
            airflow.trigger_and_wait(settings, FAILING_DAG_ID, timeout_s=300)
        assert failed.value.result.tasks == {"boom": "failed"}
        log_dir = airflow.task_log_dir(settings, FAILING_DAG_ID, failed.value.result.run_id, "boom")
        assert str(log_dir) in str(failed.value)
        assert "this task fails on purpose" in "".join(p.read_text() for p in log_dir.glob("attempt=*.log"))

        with pytest.raises(airflow.AirflowError, match="broken_dag.py.*no_such_module_here"):
            airflow.trigger_and_wait(settings, "voiceloop_harness_broken", timeout_s=60)

        assert processes_of(home)  # the check below can see them
    finally:
        result = CliRunner().invoke(app, ["stack", "down", *cli])
    assert result.exit_code == 0 and "airflow" in result.output
    assert processes_of(home) == []
    assert not stack.port_open(airflow_port)
