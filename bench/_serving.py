"""Shared by the serving benchmarks (http_load, stream_latency, kafka_throughput): the model to serve, the
studio commands, `voiceloop serve` / `voiceloop worker` as separate processes, and what else the machine
was doing while they ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
TRAINED = OUT_DIR / "accuracy" / "run" / "model.pt"  # what bench/accuracy.py trains
VOICELOOP = Path(sys.executable).with_name("voiceloop")
console = Console()


# -- the model ----------------------------------------------------------------------------------------------
def bench_model(path: str | None) -> tuple[Path, str]:
    """(checkpoint, description): ``path``, else the accuracy benchmark's trained model, else an untrained
    model of the production architecture (``asr/configs/baseline.yaml``): the same compute per request,
    so latency and throughput are representative; the transcripts are not."""
    if path:
        return Path(path), f"{path} (given)"
    if TRAINED.exists():
        return TRAINED, f"{TRAINED.relative_to(ROOT)} (trained by bench/accuracy.py)"
    import torch

    from asr.backends import build_model, save_checkpoint
    from asr.text import JamoTokenizer
    from asr.train import load_train_config

    out = OUT_DIR / "serving" / "untrained-baseline.pt"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        tok = JamoTokenizer()
        save_checkpoint(out, build_model("conformer_ctc", load_train_config("baseline").model, len(tok)).eval(),
                        tok, "ko")
    return out, (f"{out.relative_to(ROOT)}: UNTRAINED, baseline architecture (no trained model at "
                 f"{TRAINED.relative_to(ROOT)}); same compute, so timings hold, transcripts are noise")


def commands(count: int, min_s: float = 0.0, max_s: float = float("inf"), plan: str = "demo"):  # noqa: ANN201
    """Studio commands (``serving.simulator.SpokenCommand``), cached under bench/out/serving; reuses
    data/studio (`make demo`) when it holds them."""
    from serving.simulator import studio_commands

    return studio_commands(plan, OUT_DIR / "serving", count, min_s=min_s, max_s=max_s,
                           extra_dirs=[ROOT / "data" / "studio", ROOT / "data" / "synthetic"])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- processes ----------------------------------------------------------------------------------------------
def service_env(**settings: object) -> dict[str, str]:
    """The environment of a served process: one torch thread, no per-device rate limit in the way."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               VOICELOOP_INFERENCE_THREADS="1", VOICELOOP_DEVICE_RATE_PER_SECOND="100000",
               VOICELOOP_DEVICE_BURST="100000", COLUMNS="400")  # wide: log lines stay whole
    env.update({f"VOICELOOP_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def cpu_seconds(self) -> float:
        """user + system CPU seconds the process has used so far."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def spawn(name: str, args: list[str], log: Path, env: dict[str, str], program: list[str] | None = None) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        popen = subprocess.Popen([*(program or [str(VOICELOOP)]), *args], stdout=f, stderr=subprocess.STDOUT,
                                 env=env, cwd=ROOT)
    return Process(name, popen, log)


def start_server(data_dir: Path, model: Path, log: Path, **settings: object) -> tuple[Process, str]:
    """`voiceloop serve` on a free port; returns once /readyz says ready (the model is loaded and warmed)."""
    port = free_port()
    proc = spawn("serve", ["serve", "--model", str(model), "--plan", "tiny", "--port", str(port),
                           "--data-dir", str(data_dir)], log, service_env(**settings))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if json.load(r).get("ready"):
                    return proc, url
        except OSError:
            pass
        if not proc.alive() or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"voiceloop serve did not get ready; log: {log}\n{log.read_text()[-2000:]}")
        time.sleep(0.3)


def start_worker(data_dir: Path, model: Path, bootstrap: str, log: Path, group: str = "bench",
                 **settings: object) -> Process:
    """`voiceloop worker` (joins ``group``; readiness is seen from its first result, not here)."""
    args = ["worker", "--model", str(model), "--group", group, "--data-dir", str(data_dir)]
    return spawn("worker", args, log, service_env(kafka_bootstrap=bootstrap, **settings))


def register_device(data_dir: Path, prefix: str = "bench", catalog_url: str | None = None) -> tuple[str, str]:
    """(device id, key) of a device in the catalog of ``data_dir`` (or at ``catalog_url``)."""
    from serving.simulator import register_sim_devices
    from voiceloop.settings import Settings

    device = register_sim_devices(Settings(data_dir=data_dir, catalog_url=catalog_url).catalog, 1, prefix=prefix)[0]
    return device.device_id, device.key


def fresh_database(server_url: str) -> str:
    """A new, empty PostgreSQL database on ``server_url`` (``postgresql+psycopg://user@host:port/db``)."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"vl_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_database(server_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text

    from collection.db import dispose

    dispose(url)
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


# -- the machine --------------------------------------------------------------------------------------------
def _cpu_ticks() -> dict[int, tuple[int, int, str]]:
    """pid → (user + system ticks, parent pid, command line)."""
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # the process ended meanwhile
        ticks[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), int(fields[1]), cmd)
    return ticks


def _ours(pid: int, table: dict[int, tuple[int, int, str]]) -> bool:
    """This benchmark or one of its descendants (server, generator, workers, broker)."""
    me = os.getpid()
    for _ in range(64):
        if pid == me:
            return True
        if pid not in table or pid <= 1:
            return False
        pid = table[pid][1]
    return False


class OtherLoad:
    """CPU (in cores, averaged over the block) used by processes that are not this benchmark's:
    ``with OtherLoad() as other: …`` then ``other.cores`` and ``other.top`` (the busiest of them)."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s, self.cores, self.top = every_s, 0.0, []
        self._stop = threading.Event()

    def __enter__(self) -> OtherLoad:
        self._first, self._t0 = _cpu_ticks(), time.perf_counter()
        self._seen: dict[int, tuple[int, int, str]] = dict(self._first)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self._seen.update(_cpu_ticks())  # processes that end meanwhile keep their last reading

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._seen.update(_cpu_ticks())
        wall, hz = time.perf_counter() - self._t0, os.sysconf("SC_CLK_TCK")
        used = {pid: (t - self._first.get(pid, (0, 0, ""))[0]) / hz / wall for pid, (t, _, _) in self._seen.items()
                if not _ours(pid, self._seen)}
        self.cores = round(sum(used.values()), 2)
        self.top = [f"{self._seen[pid][2][:70]} ({100 * c:.0f} %)" for pid, c in
                    sorted(used.items(), key=lambda kv: -kv[1])[:3] if c >= 0.05]


def machine_snapshot(sample_s: float = 2.0) -> dict:
    """Load average, CPU count and the processes using more than 5 % of a core over the next ``sample_s``
    seconds (figures taken beside other work are not comparable: the output says what was running)."""
    first = _cpu_ticks()
    time.sleep(sample_s)
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (ticks, _, cmd) in _cpu_ticks().items():
        used = (ticks - first.get(pid, (ticks, 0, ""))[0]) / hz / sample_s
        if used >= 0.05 and pid != os.getpid():
            busy.append({"pid": pid, "cpu": round(used, 2), "cmd": cmd[:120]})
    busy.sort(key=lambda b: -b["cpu"])
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(), "busy": busy[:6],
            "at": time.strftime("%Y-%m-%d %H:%M:%S")}


def show_snapshot(label: str, snap: dict) -> None:
    console.print(f"[dim]{label}: load average {snap['loadavg']} on {snap['cpus']} CPUs; busy: "
                  + ("; ".join(f"{b['cmd'][:70]} ({100 * b['cpu']:.0f} % of a core)" for b in snap["busy"]) or "none"))


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    return path
