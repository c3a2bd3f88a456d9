"""Where a recognition request's time goes, in-process (no HTTP): authenticate, decode, parse, record.

    .venv/bin/python bench/recognize_profile.py                    # 1 and 4 concurrent threads, SQLite catalog
    .venv/bin/python bench/recognize_profile.py --catalog-server postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Runs what the POST /v1/recognize route runs after reading the body — the device-key lookup (its own
catalog session), ``RecognitionService.recognize`` (decode, command parse, upsert of the production
row) — from 1 and from N threads of one process, the way the API's thread pool does, on one torch
thread. Each stage is timed by wrapping it. Output: a table and ``bench/out/recognize_profile.json``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from _serving import OUT_DIR, bench_model, commands, console, drop_database, fresh_database, write_json
from rich.table import Table

from serving.simulator import latency_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the accuracy benchmark's, else an untrained baseline)")
    ap.add_argument("--requests", type=int, default=120, help="per thread count")
    ap.add_argument("--threads", default="1,4")
    ap.add_argument("--catalog-server", metavar="URL", help="a PostgreSQL server for the catalog (fresh database)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "recognize_profile.json")
    ap.add_argument("--without-slices", action="store_true",
                    help="skip the slice and the input features (the cost they add = the difference)")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from collection.db import connect
    from collection.store import AudioStore
    from serving.audio_input import InputLimits, read_command_audio
    from serving.devices import authenticate_device
    from serving.model_manager import ModelManager
    from serving.recognition import RecognitionService, Utterance
    from serving.simulator import register_sim_devices

    model, model_desc = bench_model(a.model)
    tmp = Path(tempfile.mkdtemp(prefix="vl-recognize-profile-"))
    url = fresh_database(a.catalog_server) if a.catalog_server else f"sqlite:///{tmp / 'catalog.db'}"
    device = register_sim_devices(url, 1, prefix="bench")[0]
    catalog = connect(url)
    service = RecognitionService(ModelManager.from_path(str(model)), catalog, AudioStore(str(tmp / "store")),
                                 language="ko")
    cmds = commands(12, min_s=1.8, max_s=2.2)
    wavs = [(read_command_audio(c.wav, InputLimits()), c.wav) for c in cmds]
    stages: dict[str, list[float]] = {}
    lock = threading.Lock()

    def timed(name: str, fn):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    stages.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
        return wrapper

    recognizer = service.models.champion.recognizer
    recognizer.transcribe_batch = timed("decode", recognizer.transcribe_batch)
    service.parser.parse = timed("command parse", service.parser.parse)
    service.record = timed("catalog upsert", service.record)
    # Inside the upsert: what monitoring adds to every request, the input features (the slice comes with
    # the authenticated device, as in the route: no query).
    import serving.recognition as recognition

    if a.without_slices:
        recognition.input_features = lambda *_: recognition.InputFeatures(0.0, 0.0, None)
        recognition.device_slices = lambda *_: {}
    recognition.input_features = timed("  of which input features", recognition.input_features)
    counter = iter(range(10**9))

    def auth():  # noqa: ANN202
        with catalog() as session:
            return authenticate_device(session, device.key)

    auth_timed = timed("device key lookup", auth)

    def request(wav, raw) -> None:  # noqa: ANN001
        owner = auth_timed()
        profile = None if a.without_slices else recognition.device_slice(owner)
        service.recognize(Utterance(wav, device.device_id, f"prof-{next(counter)}", raw, device_slice=profile),
                          channel="http")

    whole = timed("whole request", request)
    rows = []
    try:
        for n in (int(x) for x in a.threads.split(",")):
            for i in range(3):
                whole(*wavs[i % len(wavs)])  # warm-up
            stages.clear()

            def work(k: int, n: int = n) -> None:
                for i in range(k, a.requests, n):
                    whole(*wavs[i % len(wavs)])

            threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
            t0, c0 = time.perf_counter(), time.process_time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append({"threads": n, "requests": a.requests, "req_per_s": round(a.requests / wall, 1),
                         "cpu_ms_per_request": round(cpu / a.requests * 1e3, 1),
                         "stages": {k: latency_stats(v) for k, v in stages.items()}})
    finally:
        service.close()
        if a.catalog_server:
            drop_database(a.catalog_server, url)
        shutil.rmtree(tmp, ignore_errors=True)

    t = Table("threads", "req/s", "CPU ms / request", "stage", "p50 ms", "p99 ms", "max ms",
              title=f"in-process request stages ({'PostgreSQL' if a.catalog_server else 'SQLite'} catalog)")
    for r in rows:
        for k, (name, s) in enumerate(r["stages"].items()):
            t.add_row(*((str(r["threads"]), f"{r['req_per_s']:.1f}", f"{r['cpu_ms_per_request']:.1f}") if k == 0
                        else ("", "", "")), name, f"{s['p50']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.1f}")
    console.print(f"model: {model_desc}")
    console.print(t)
    path = write_json(a.out, {"model": model_desc, "catalog": "PostgreSQL" if a.catalog_server else "SQLite",
                              "runs": rows})
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
