"""Airflow 3 for the embedded stack: its environment, metadata DB, admin login, and DAG runs through its API.

    airflow_env(settings, port)         # the environment every Airflow process of the stack gets
    migrate(settings)                    # `airflow db migrate` once per Airflow version (re-running is cheap)
    admin_login(settings)                # (user, password, password file) for the UI and the REST API
    trigger_and_wait(settings, dag_id)   # trigger a run of the running stack's Airflow, wait, return its states
    wait_for_next_run(settings, dag_id, after)  # a run Airflow starts itself (Asset event), until it finishes
    use_in_this_process(settings)        # point this process's Airflow (``dag.test()`` in tests) at it

Nothing here imports ``airflow``: Airflow reads its configuration when it is first imported (and, without
``AIRFLOW_HOME``, creates ``~/airflow``), so every Airflow step runs as a subprocess with ``airflow_env``.

Decisions (docs/airflow.md): ``airflow standalone`` with the LocalExecutor -- Airflow 3 has no
SequentialExecutor and standalone forces a local executor anyway; tasks do not write the metadata DB
themselves (they go through the api-server's execution API), so SQLite holds. Parallelism 2 on this
2-core machine. DAGs start paused (Airflow's default): the stack coming up does not start every schedule;
``trigger_and_wait`` unpauses the DAG it triggers.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from voiceloop.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # the api-server listens on loopback only, like the rest of the embedded stack
DEFAULT_PORT = 8080
ADMIN_USER = "admin"
PARALLELISM = 2  # task slots: one per core; a training task already uses a whole core
FINISHED = ("success", "failed")  # terminal DAG run states


class AirflowError(RuntimeError):
    """Airflow could not be set up, reached, or a DAG run did not succeed."""


def repo_dags_folder() -> Path:
    """The repository's ``dags/`` (next to the ``infra`` package): the stack's and the tests' dags folder."""
    return Path(__file__).resolve().parent.parent / "dags"


def airflow_home(settings: Settings) -> Path:
    """``<data_dir>/airflow``: airflow.cfg (with its generated secrets), the metadata DB, task logs, passwords."""
    return (settings.data_dir / "airflow").resolve()


def metadata_db_url(settings: Settings) -> str:
    return f"sqlite:///{airflow_home(settings) / 'airflow.db'}"


def password_file(settings: Settings) -> Path:
    """Where the simple auth manager keeps its users' passwords (JSON ``{user: password}``)."""
    return airflow_home(settings) / "simple_auth_manager_passwords.json.generated"


def task_log_dir(settings: Settings, dag_id: str, run_id: str, task_id: str) -> Path:
    """The folder of one task's log files (one ``attempt=<n>.log`` per try), Airflow's default layout."""
    return airflow_home(settings) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"


def voiceloop_env(settings: Settings) -> dict[str, str]:
    """``VOICELOOP_*`` for every setting that has a value, so a DAG task's ``Settings()`` equals ``settings``.

    Paths are made absolute: Airflow runs tasks from another working directory.
    """
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value.resolve())
        elif isinstance(value, list | dict):
            value = json.dumps(value)  # pydantic-settings parses complex values from JSON
        env[f"VOICELOOP_{name.upper()}"] = str(value)
    return env


def airflow_env(settings: Settings, port: int = DEFAULT_PORT, dags_folder: Path | None = None,
                parallelism: int = PARALLELISM, log_server_ports: tuple[int, int] | None = None) -> dict[str, str]:
    """The environment (added to ``os.environ``) of every Airflow process of the stack.

    ``port``: the api-server's (UI, REST API, and the execution API the task workers call).
    ``log_server_ports``: (worker, triggerer) log servers; Airflow's 8793/8794 when not given -- the stack
    passes free ports so a second stack (tests beside a dev stack) does not collide.
    """
    home = airflow_home(settings)
    folder = (dags_folder or repo_dags_folder()).resolve()
    base_url = f"http://{HOST}:{port}"
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url(settings),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # The simple auth manager (standalone's): one admin whose password lives in password_file().
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file(settings)),
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(port),
        # Task workers reach the execution API through base_url (Airflow's default is localhost:8080).
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # A new DAG file shows up within 30 s instead of 5 min (listing one folder is cheap).
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # A scheduler heartbeat can lag while training holds both cores; 30 s would call it unhealthy.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "120",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "NO_COLOR": "1",
        # `airflow standalone` starts its components as `airflow …` from PATH: this venv's, not another.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **voiceloop_env(settings),
    }
    if log_server_ports is not None:
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(log_server_ports[0])
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(log_server_ports[1])
    return env


def airflow_command(*args: str) -> list[str]:
    """``python -m airflow …`` with this interpreter (the ``airflow`` script of this venv)."""
    return [sys.executable, "-m", "airflow", *args]


# -- metadata DB and login -----------------------------------------------------------------------
def _migrated_marker(settings: Settings) -> Path:
    return airflow_home(settings) / ".voiceloop-migrated"


def installed_version() -> str:
    return importlib.metadata.version("apache-airflow-core")


def migrate(settings: Settings, timeout_s: float = 600.0) -> bool:
    """Create or upgrade the metadata DB with ``airflow db migrate``; False when it was already done.

    A marker file remembers the Airflow version the DB was migrated for: skipping saves the ~2.5 s an
    ``airflow db migrate`` at head costs, and an upgraded Airflow migrates again. The first run also writes
    ``airflow.cfg`` with the generated secrets (JWT, fernet key) every Airflow process shares.
    """
    home = airflow_home(settings)
    marker = _migrated_marker(settings)
    db = home / "airflow.db"
    if db.exists() and marker.exists() and marker.read_text().strip() == installed_version():
        log.debug("Airflow metadata DB %s is at head for Airflow %s", db, installed_version())
        return False
    home.mkdir(parents=True, exist_ok=True)
    ensure_admin_password(settings)
    log_path = home / "migrate.log"
    log.info("migrating the Airflow metadata DB %s (log %s)", db, log_path)
    started = time.monotonic()
    with open(log_path, "ab") as out:
        try:
            result = subprocess.run(airflow_command("db", "migrate"), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **airflow_env(settings)},
                                    timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise AirflowError(f"`airflow db migrate` took over {timeout_s:g} s; see {log_path}") from e
    if result.returncode != 0:
        tail = "\n  ".join(log_path.read_text(errors="replace").strip().splitlines()[-8:])
        raise AirflowError(f"`airflow db migrate` failed (exit {result.returncode}); see {log_path}:\n  {tail}")
    marker.write_text(installed_version())
    log.info("Airflow metadata DB ready in %.1f s", time.monotonic() - started)
    return True


def ensure_admin_password(settings: Settings) -> str:
    """The admin's password, generated into ``password_file`` (mode 0600) unless it is there already.

    Written before Airflow starts (rather than letting the auth manager generate and print it) so that
    ``voiceloop stack up`` can say where it is and ``trigger_and_wait`` can log in, with no log scraping.
    """
    path = password_file(settings)
    passwords = _read_passwords(path)
    if ADMIN_USER not in passwords:
        passwords[ADMIN_USER] = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(passwords) + "\n")
    return passwords[ADMIN_USER]


def _read_passwords(path: Path) -> dict[str, str]:
    if not path.exists() or not path.read_text().strip():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise AirflowError(f"{path} is not the simple auth manager's password file ({e}); delete it to "
                           "generate a new admin password") from e


@dataclass(frozen=True)
class AdminLogin:
    user: str
    password: str
    password_file: Path


def admin_login(settings: Settings) -> AdminLogin:
    return AdminLogin(ADMIN_USER, ensure_admin_password(settings), password_file(settings))


def login_help(settings: Settings, url: str) -> str:
    """How to open the UI and log in: README-ready lines for ``voiceloop stack up --airflow``."""
    path = password_file(settings)
    return (f"Airflow UI: {url}   (log in as {ADMIN_USER}; the password is in {path})\n"
            f"  print it: python -c \"import json; print(json.load(open('{path}'))['{ADMIN_USER}'])\"")


# -- the api-server ----------------------------------------------------------------------------
def health(url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """``GET /api/v2/monitor/health`` (no login needed), or None when the api-server does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def airflow_answers(url: str) -> bool:
    """The api-server answers and reports a healthy metadata DB and scheduler (so a triggered run will run)."""
    report = health(url)
    if report is None:
        return False
    return all(report.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))


@dataclass
class AirflowClient:
    """A logged-in client of the public REST API (``/api/v2``) of one api-server."""

    url: str
    token: str
    timeout_s: float = 30.0

    @classmethod
    def login(cls, url: str, user: str, password: str) -> AirflowClient:
        """``POST /auth/token`` with the simple auth manager's credentials → a JWT for ``Authorization``."""
        body = _call("POST", f"{url}/auth/token", {"username": user, "password": password}, timeout_s=30.0)
        return cls(url, body["access_token"])

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        return _call(method, f"{self.url}/api/v2{path}", body, token=self.token, timeout_s=self.timeout_s)


class ApiError(AirflowError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _call(method: str, url: str, body: dict | None = None, token: str | None = None,
          timeout_s: float = 30.0) -> Any:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - loopback
            raw = response.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        raise ApiError(e.code, f"{method} {url} → HTTP {e.code}: {detail}") from e
    except (urllib.error.URLError, OSError) as e:
        raise AirflowError(f"{method} {url} failed: {e}; is the stack up (`voiceloop stack up --airflow`)?") from e
    return json.loads(raw) if raw else None


# -- DAG runs through the API ------------------------------------------------------------------
@dataclass(frozen=True)
class DagRunResult:
    dag_id: str
    run_id: str
    state: str  # success | failed (or the state it was in at a timeout)
    tasks: dict[str, str] = field(default_factory=dict)  # task id ("id[map index]" when mapped) → state


class DagRunFailed(AirflowError):
    def __init__(self, message: str, result: DagRunResult):
        super().__init__(message)
        self.result = result


def stack_url(settings: Settings) -> str:
    """The URL of the stack's running Airflow (from the stack's state file)."""
    from infra.stack import read_state  # the stack imports this module for the service spec

    state = read_state(settings).get("airflow")
    if state is None:
        raise AirflowError(f"Airflow is not part of the stack in {settings.data_dir}; "
                           "start it with `voiceloop stack up --airflow`")
    return state.url


def client_for(settings: Settings, url: str | None = None) -> AirflowClient:
    """A client of the stack's Airflow (or of ``url``), logged in as the admin."""
    login = admin_login(settings)
    return AirflowClient.login(url or stack_url(settings), login.user, login.password)


def trigger_and_wait(settings: Settings, dag_id: str, conf: dict | None = None,
                     logical_date: datetime | None = None, timeout_s: float = 1800.0, url: str | None = None,
                     poll_s: float = 2.0, parse_timeout_s: float = 120.0) -> DagRunResult:
    """Trigger ``dag_id`` on the stack's Airflow (REST API), wait until the run finishes, return its states.

    The DAG is unpaused first (DAGs start paused); waits up to ``parse_timeout_s`` for the dag-processor to
    have parsed it. ``logical_date``: None for a manual run without one (Airflow 3's default); with one,
    Airflow refuses a second run for the same date. Raises DagRunFailed naming the failed tasks and their log
    folders, AirflowError when the DAG does not load (with its import error) or the run outlives ``timeout_s``.
    """
    client = client_for(settings, url)
    unpause(client, dag_id, parse_timeout_s)
    body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": conf or {}}
    try:
        run = client.call("POST", f"/dags/{_q(dag_id)}/dagRuns", body)
    except ApiError as e:
        if e.status == 409:
            raise AirflowError(f"{dag_id} already has a run for logical date {body['logical_date']}; clear it in "
                               "the UI or pick another date") from e
        raise
    log.info("triggered %s run %s", dag_id, run["dag_run_id"])
    return wait_for_run(client, settings, dag_id, run["dag_run_id"], timeout_s, poll_s)


def unpause(client: AirflowClient, dag_id: str, parse_timeout_s: float = 120.0) -> None:
    """Unpause ``dag_id`` once it is parsed: a paused DAG runs nothing, not even its Asset-triggered runs."""
    if wait_for_dag(client, dag_id, parse_timeout_s).get("is_paused"):
        client.call("PATCH", f"/dags/{_q(dag_id)}", {"is_paused": False})


def wait_for_next_run(settings: Settings, dag_id: str, after: datetime, timeout_s: float = 1800.0,
                      url: str | None = None, poll_s: float = 2.0) -> DagRunResult:
    """Wait for a run of ``dag_id`` that Airflow starts itself (an Asset update, its schedule) after ``after``
    (timezone-aware), then until it finishes; the DAG must be unpaused (``unpause``) before the event."""
    client = client_for(settings, url)
    deadline = time.monotonic() + timeout_s
    query = urllib.parse.urlencode({"run_after_gte": after.isoformat(), "order_by": "run_after", "limit": 1})
    while True:
        runs = client.call("GET", f"/dags/{_q(dag_id)}/dagRuns?{query}")["dag_runs"]
        if runs:
            remaining = max(deadline - time.monotonic(), poll_s)
            return wait_for_run(client, settings, dag_id, runs[0]["dag_run_id"], remaining, poll_s)
        if time.monotonic() >= deadline:
            raise AirflowError(f"no run of {dag_id} started after {after.isoformat()} within {timeout_s:g} s; "
                               "is it unpaused, and did its Asset get an event?")
        time.sleep(poll_s)


def wait_for_run(client: AirflowClient, settings: Settings, dag_id: str, run_id: str, timeout_s: float,
                 poll_s: float = 2.0) -> DagRunResult:
    """Poll one run until it succeeds (its states) or fails (DagRunFailed naming tasks and log folders)."""
    deadline = time.monotonic() + timeout_s
    while (state := client.call("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")["state"]) not in FINISHED:
        if time.monotonic() >= deadline:
            result = DagRunResult(dag_id, run_id, state, task_states(client, dag_id, run_id))
            raise DagRunFailed(f"{dag_id} run {run_id} still {state} after {timeout_s:g} s; task states: "
                               f"{result.tasks}", result)
        time.sleep(poll_s)
    result = DagRunResult(dag_id, run_id, state, task_states(client, dag_id, run_id))
    log.info("%s run %s: %s", dag_id, run_id, state)
    if state != "success":
        failed = {t: s for t, s in result.tasks.items() if s not in ("success", "skipped")}
        logs = "\n  ".join(f"{t} ({s}): {task_log_dir(settings, dag_id, run_id, t.split('[')[0])}"
                           for t, s in failed.items())
        raise DagRunFailed(f"{dag_id} run {run_id} {state}; tasks not successful:\n  {logs}", result)
    return result


def wait_for_dag(client: AirflowClient, dag_id: str, timeout_s: float) -> dict[str, Any]:
    """``GET /dags/{dag_id}`` until the dag-processor has parsed it; an import error of its file is raised."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.call("GET", f"/dags/{_q(dag_id)}")
        except ApiError as e:
            if e.status != 404:
                raise
        errors = import_errors(client)
        if errors:
            listed = "\n  ".join(f"{path}: {text.strip().splitlines()[-1]}" for path, text in errors.items())
            raise AirflowError(f"DAG {dag_id} is not loaded; DAG files with import errors:\n  {listed}")
        if time.monotonic() >= deadline:
            raise AirflowError(f"DAG {dag_id} did not appear within {timeout_s:g} s; is its file in the dags "
                               "folder and is the dag-processor running (`voiceloop stack status`)?")
        time.sleep(2.0)


def import_errors(client: AirflowClient) -> dict[str, str]:
    """DAG file → import error (traceback), as the dag-processor recorded them."""
    body = client.call("GET", "/importErrors?limit=100")
    return {e["filename"]: e["stack_trace"] for e in body.get("import_errors", [])}


def task_states(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, str]:
    body = client.call("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances?limit=100")
    states = {}
    for ti in body["task_instances"]:
        key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        states[key] = ti["state"] or "none"
    return states


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


# -- Airflow inside this process (dag.test() in tests) -----------------------------------------------
_process_settings: Settings | None = None  # whose Airflow home this process uses (Airflow's config is global)


def use_in_this_process(settings: Settings, dags_folder: Path | None = None, migrate_db: bool = True) -> Settings:
    """Point this process's Airflow (``AIRFLOW_*`` in ``os.environ``) at ``settings``' Airflow home.

    For ``dag.test()`` and ``DagBag`` in the test process. Must run before anything imports ``airflow``
    (its configuration is read once, at import). The first call wins: a later one (another test folder's
    setup) gets the first call's settings back, since Airflow cannot be re-pointed once imported; its
    home is ``airflow_home(<returned settings>)``. ``VOICELOOP_*`` is left alone: a test sets what its
    tasks need. ``migrate_db``: also run ``migrate`` (skipped when done already).
    """
    global _process_settings
    if _process_settings is None:
        env = {k: v for k, v in airflow_env(settings, dags_folder=dags_folder).items() if k.startswith("AIRFLOW")}
        if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
            raise AirflowError(f"airflow was imported before its environment was set (AIRFLOW_HOME="
                               f"{os.environ.get('AIRFLOW_HOME', '~/airflow')}, wanted {env['AIRFLOW_HOME']}); "
                               "set it up before the first `import airflow`")
        os.environ.update(env)
        _process_settings = settings
    if migrate_db:
        migrate(_process_settings)
    return _process_settings
