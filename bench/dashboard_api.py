"""Ops dashboard responses with 1,000,000 production utterances and 10,000 complaints (target: p95 ≤ 200 ms).

    .venv/bin/python bench/dashboard_api.py                           # SQLite, 1M utterances, 10k complaints
    .venv/bin/python bench/dashboard_api.py --backends sqlite postgresql
    .venv/bin/python bench/dashboard_api.py --utterances 100000 --repeat 10

Generates 30 days of traffic ending now (slices from the device-profile vocabularies, a model version
change every 10 days, lognormal latencies), what the drift job would have stored for it (hourly traffic
metrics and 7-day labeled metrics per slice, all versions and per version — ~570,000 ``slice_metrics``
rows), 200 alerts and ``--voc`` complaints linked to utterances; bulk-inserts it (SQLite ``executemany``,
PostgreSQL ``COPY``) into a freshly migrated catalog, then calls the app in-process (FastAPI TestClient,
an ops user's bearer token) ``--repeat`` times per request after one warm-up, and prints p50/p95/max.

The first overview over 30 days computes the hourly traffic rollups of all 720 hours once (reported as
``cold``); every later request reads them. Output: a table and ``bench/out/dashboard_api.json``.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from collection.db import connect, dispose
from collection.users import create_user, issue_token
from serving.api.main import create_app
from voiceloop.settings import Settings

OUT = Path(__file__).resolve().parent / "out" / "dashboard_api.json"
TARGET_P95_MS = 200.0
DAYS = 30
DIALECTS = ("standard", "gyeongsang", "jeolla", "chungcheong", "gangwon", "jeju")
AGES = ("20s", "30s", "40s", "50s", "60s", "70s")
ENVS = ("quiet", "tv", "kitchen", "far_field")
DEVICE_TYPES = ("speaker", "speaker_mini")
VERSIONS = ("voiceloop-asr/1", "voiceloop-asr/2", "voiceloop-asr/3")
TRAFFIC_METRICS = ("utterances", "utterances_ref", "confidence_mean", "confidence_ref", "confidence_drift",
                   "out_of_grammar_share", "voc_per_1k", "voc_per_1k_ref", "psi_duration", "ks_duration",
                   "psi_speech_dbfs", "ks_speech_dbfs", "psi_snr_db", "ks_snr_db", "psi_speech_rate",
                   "ks_speech_rate")
LABELED_METRICS = ("wer", "cer", "exact_match", "wer_baseline", "cer_baseline")
CAUSES = ("low_confidence", "low_snr", "out_of_grammar", "endpoint_cutoff")
STATUSES = ("new", "triaged", "labeled", "fixed", "closed")
CATEGORIES = ("misrecognized", "wrong_action", "no_response", "too_slow", "other")
REQUESTS = [  # (name, path, query)
    ("overview 24h", "/ops/api/overview", {"since": "24h"}),
    ("overview 7d", "/ops/api/overview", {"since": "7d"}),
    ("overview 30d", "/ops/api/overview", {"since": "30d"}),
    ("drift 7d (wer, all slices)", "/ops/api/drift", {}),
    ("drift 30d dialect", "/ops/api/drift", {"since": "30d", "slice_key": "dialect"}),
    ("data plan", "/ops/api/data", {}),
    ("VOC list (/ops/api/voc)", "/ops/api/voc", {"limit": 50}),
    ("VOC list, status+slice", "/ops/api/voc", {"status": "new", "slice_key": "dialect", "slice_value": "jeolla"}),
    ("VOC rate 7d daily by dialect", "/ops/api/voc/rate", {"slice_key": "dialect"}),
    ("VOC rate 30d hourly by environment", "/ops/api/voc/rate",
     {"since": (datetime.now(UTC) - timedelta(days=DAYS)).isoformat(), "slice_key": "environment",
      "bucket_s": 3600}),
    ("page /ops (24h)", "/ops", {}),
    ("page /ops/drift", "/ops/drift", {}),
    ("page /ops/voc", "/ops/voc", {}),
    ("page /ops/voc cause+slice", "/ops/voc", {"cause": "low_snr", "slice": "dialect=jeolla"}),
]
console = Console()


def generate(n: int, voc: int, now: datetime, seed: int = 0) -> dict[str, list[tuple]]:
    """Rows per table, as tuples in the column order of :data:`COLUMNS`."""
    rng = np.random.default_rng(seed)
    start = now - timedelta(days=DAYS)
    offsets = np.sort(rng.uniform(0, DAYS * 86400, n))
    latency = np.round(rng.lognormal(4.3, 0.4, n), 1)
    confidence = np.round(rng.beta(8, 2, n), 3)
    devices = rng.integers(0, 20000, n)
    pick = {name: rng.integers(0, len(v), n) for name, v in (("d", DIALECTS), ("a", AGES), ("e", ENVS),
                                                               ("t", DEVICE_TYPES))}
    in_grammar = rng.random(n) > 0.08
    ended = rng.random(n) < 0.01
    snr = np.round(rng.normal(22, 7, n), 1)
    utts = []
    for i in range(n):
        at = start + timedelta(seconds=float(offsets[i]))
        utts.append((f"req-{i:08d}", f"dev-{devices[i]:05d}", VERSIONS[min(int(offsets[i] // (10 * 86400)), 2)],
                     float(confidence[i]), float(latency[i]), at, "http", "champion", 2.0,
                     "max_seconds" if ended[i] else None, DIALECTS[pick["d"][i]], AGES[pick["a"][i]],
                     ENVS[pick["e"][i]], DEVICE_TYPES[pick["t"][i]], float(snr[i]), bool(in_grammar[i])))
    metrics = []
    slices = [("all", "all")] + [(k, v) for k, vs in (("dialect", DIALECTS), ("age_band", AGES),
                                                       ("environment", ENVS), ("device_type", DEVICE_TYPES))
                                 for v in vs]
    for h in range(1, DAYS * 24 + 1):
        end = start + timedelta(hours=h)
        version = VERSIONS[min((h - 1) // 240, 2)]
        for key, value in slices:
            for mv in ("", version):
                for m in TRAFFIC_METRICS:
                    metrics.append((end, 3600, key, value, mv, m, float(rng.random()), None, None, 250, now))
                for m in LABELED_METRICS:
                    v = float(0.08 + 0.04 * rng.random())
                    metrics.append((end, 7 * 86400, key, value, mv, m, v, v - 0.02, v + 0.02, 300, now))
    alerts = [(f"alr-{i:05d}", "wer_above_baseline", "dialect", DIALECTS[i % 6], "wer", 0.15, 0.08, 0.12,
               start + timedelta(hours=3 * i + 1), "", "open" if i % 3 else "resolved", now,
               None, "{}") for i in range(200)]
    feedback, links = [], []
    for i in range(voc):
        j = int(rng.integers(0, n))
        u = utts[j]
        causes = [c for c in CAUSES if rng.random() < 0.3] + ([f"slice:dialect={u[10]}"] if u[10] != "standard" else [])
        feedback.append((f"voc-{i:08d}", u[0], u[1], CATEGORIES[i % 5], "불 켜랬는데 안 돼요" if i % 2 else None,
                         STATUSES[int(rng.integers(0, 5))], u[5] + timedelta(minutes=1), "device", u[5], None,
                         json.dumps(causes), int(rng.integers(0, 120)), None, None, now, u[10], u[11], u[12], u[13]))
        links.append((f"voc-{i:08d}", u[0]))
    return {"production_utterances": utts, "slice_metrics": metrics, "alerts": alerts, "feedback": feedback,
            "feedback_utterances": links}


COLUMNS = {
    "production_utterances": ("request_id", "device_id", "model_version", "confidence", "latency_ms", "created_at",
                              "channel", "route", "duration_s", "ended_by", "dialect", "age_band", "environment",
                              "device_type", "snr_db", "in_grammar"),
    "slice_metrics": ("window_end", "window_s", "slice_key", "slice_value", "model_version", "metric", "value",
                      "ci_low", "ci_high", "n", "computed_at"),
    "alerts": ("id", "kind", "slice_key", "slice_value", "metric", "value", "baseline", "threshold", "window_end",
               "model_version", "status", "created_at", "resolved_at", "detail"),
    "feedback": ("id", "request_id", "device_id", "category", "text", "status", "created_at", "source",
                 "occurred_at", "created_by", "causes", "priority", "label_task_id", "fixed_in_model_version",
                 "updated_at", "dialect", "age_band", "environment", "device_type"),
    "feedback_utterances": ("feedback_id", "request_id"),
}


def _sqlite_value(v: object) -> object:
    return v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v  # SQLAlchemy's format, UTC


def load(url: str, data: dict[str, list[tuple]]) -> None:
    connect(url)  # migrated
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.split(":///", 1)[1])
        for table, rows in data.items():
            cols = COLUMNS[table]
            con.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            ([_sqlite_value(v) for v in row] for row in rows))
        con.commit()
        con.execute("ANALYZE")
        con.close()
        return
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as con, con.cursor() as cur:
        for table, rows in data.items():
            with cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        con.commit()
        con.execute("ANALYZE")


def time_requests(url: str, data_dir: Path, repeat: int) -> tuple[float, list[dict]]:
    app = create_app(Settings(data_dir=data_dir, catalog_url=url), plan="demo")
    with connect(url)() as session:
        user = create_user(session, "bench-ops", "ops", "bench-password-123")
        session.commit()
        token = issue_token(user.id, app.state.settings.session_secret)
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    r = client.get("/ops/api/overview", params={"since": "30d"})  # computes the 720 hourly rollups once
    cold = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    rows = []
    for name, path, query in REQUESTS:
        r = client.get(path, params=query)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            client.get(path, params=query)
            times.append(1000 * (time.perf_counter() - t))
        times.sort()
        rows.append({"request": name, "path": path, "query": query, "p50_ms": round(statistics.median(times), 1),
                     "p95_ms": round(times[math.ceil(0.95 * len(times)) - 1], 1),  # nearest rank
                     "max_ms": round(times[-1], 1), "bytes": len(r.content)})
    return cold, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=1_000_000)
    parser.add_argument("--voc", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--backends", nargs="+", default=["sqlite"], choices=["sqlite", "postgresql"])
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    now = datetime.now(UTC)
    t = time.perf_counter()
    data = generate(args.utterances, args.voc, now)
    console.print(f"generated {sum(len(v) for v in data.values()):,} rows in {time.perf_counter() - t:.0f} s "
                  f"({len(data['slice_metrics']):,} slice metrics)")
    # The generated rows (1.6 million tuples) stay in this process for the second backend; a server holds
    # nothing like them. Frozen, the garbage collector stops scanning them: otherwise each full collection
    # pauses ~200 ms in the middle of some timed request.
    gc.freeze()
    results = {}
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix="vl-dash-") as tmp:
            if backend == "sqlite":
                url, admin = f"sqlite:///{Path(tmp) / 'catalog.db'}", None
            else:
                admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
                name = f"vl_bench_{uuid.uuid4().hex[:8]}"
                with admin.connect() as c:
                    c.execute(text(f'CREATE DATABASE "{name}"'))
                url = args.pg_url.rsplit("/", 1)[0] + "/" + name
            try:
                t = time.perf_counter()
                load(url, data)
                loaded = time.perf_counter() - t
                cold, rows = time_requests(url, Path(tmp), args.repeat)
            finally:
                dispose(url)
                if admin is not None:
                    with admin.connect() as c:
                        c.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
                    admin.dispose()
        results[backend] = {"load_s": round(loaded, 1), "cold_overview_30d_s": round(cold, 2), "requests": rows}
        table = Table(title=f"{backend}: {args.utterances:,} utterances, {args.voc:,} complaints "
                            f"(load {loaded:.0f} s; first 30-day overview {cold:.2f} s, rollups of 720 hours)")
        for col in ("request", "p50 ms", "p95 ms", "max ms", "KiB"):
            table.add_column(col, justify="left" if col == "request" else "right")
        for r in rows:
            style = "red" if r["p95_ms"] > TARGET_P95_MS else None
            table.add_row(r["request"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['max_ms']:.1f}",
                          f"{r['bytes'] / 1024:.0f}", style=style)
        console.print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    json.dump({"utterances": args.utterances, "voc": args.voc, "repeat": args.repeat, "results": results}, buf,
              indent=1)
    OUT.write_text(buf.getvalue())
    console.print(f"[dim]→ {OUT}")


if __name__ == "__main__":
    main()
