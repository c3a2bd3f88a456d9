"""The drift job over 1,000,000 production utterances, on SQLite and on PostgreSQL (target: ≤ 30 s).

    .venv/bin/python bench/drift_job.py                                  # 1M utterances, both databases
    .venv/bin/python bench/drift_job.py --utterances 200000 --backends sqlite
    .venv/bin/python bench/drift_job.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Generates a week of traffic (slices drawn from the device-profile vocabularies, two model versions, input
features around a training-like profile, far-field utterances noisier), ``--labeled`` of them with a
reviewed human transcript, ``--feedback`` complaints; bulk-inserts it (SQLite ``executemany`` in one
transaction, PostgreSQL ``COPY``) into a freshly migrated catalog, then times, per database:

- ``1h``: one hourly window (what the scheduled job does; ~6,000 utterances);
- ``7d``: one window over the whole week — every one of the 1,000,000 rows aggregated (the target case);
- ``7d again``: the same window re-run (upserts the same rows);
- ``alerts``: evaluating the alert rules over the 7-day window.

Output: a table, and ``bench/out/drift_job.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from collection.db import connect, dispose
from monitoring.alerts import AlertConfig, evaluate_alerts
from monitoring.baseline import Baseline
from monitoring.drift import DAY, HOUR, DriftConfig, compute_window
from monitoring.reference import build_reference

OUT = Path(__file__).resolve().parent / "out" / "drift_job.json"
console = Console()
END = datetime(2025, 3, 10, 0, 0, tzinfo=UTC)
VERSIONS = (("voiceloop-asr/7", 0.9), ("voiceloop-asr/8", 0.1))
DIALECTS = (("standard", 0.6), ("gyeongsang", 0.14), ("jeolla", 0.1), ("chungcheong", 0.08), ("gangwon", 0.05),
            ("jeju", 0.03))
AGES = (("20s", 0.15), ("30s", 0.2), ("40s", 0.2), ("50s", 0.15), ("60s", 0.12), ("70s+", 0.08), ("teens", 0.05),
        ("child", 0.05))
ENVIRONMENTS = (("quiet", 0.4), ("tv", 0.2), ("kitchen", 0.2), ("far_field", 0.2))
DEVICE_TYPES = (("speaker", 0.7), ("speaker_mini", 0.2), ("display", 0.1))
PU_COLUMNS = ("request_id", "device_id", "model_version", "hypothesis", "confidence", "latency_ms", "recording_id",
              "created_at", "channel", "route", "duration_s", "dialect", "age_band", "environment", "device_type",
              "speech_dbfs", "snr_db", "speech_rate", "in_grammar")
SENTENCES = ("거실 불 켜줘", "볼륨 3으로 해줘", "티비 꺼줘", "안방 에어컨 켜줘", "내일 날씨 알려줘")


def pick(rng: np.random.Generator, choices: tuple, n: int) -> np.ndarray:
    names, weights = zip(*choices, strict=True)
    return np.asarray(names, dtype=object)[rng.choice(len(names), n, p=np.asarray(weights) / sum(weights))]


def generate(n: int, labeled: int, seed: int = 0) -> tuple[list[tuple], list[tuple], list[tuple], list[tuple]]:
    """(utterance rows, recording rows, task rows, label rows) as tuples in PU_COLUMNS order etc."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, 7 * DAY, n))
    env = pick(rng, ENVIRONMENTS, n)
    far = env == "far_field"
    duration = np.clip(rng.normal(2.0, 0.5, n), 0.3, 10)
    snr = rng.normal(25, 6, n) - 8 * far
    level = rng.normal(-22, 4, n) - 4 * far
    rate = rng.normal(5, 1, n)
    conf = np.clip(rng.normal(0.85, 0.08, n) - 0.1 * far, 0, 1)
    cols = {"dialect": pick(rng, DIALECTS, n), "age_band": pick(rng, AGES, n),
            "device_type": pick(rng, DEVICE_TYPES, n), "model_version": pick(rng, VERSIONS, n)}
    labeled_idx = set(rng.choice(n, labeled, replace=False).tolist())
    utts, recs, tasks, labels = [], [], [], []
    for i in range(n):
        rid = f"req-{i:012d}"
        created = (END - timedelta(seconds=float(offsets[i]))).strftime("%Y-%m-%d %H:%M:%S.%f")
        rec_id = hyp = None
        if i in labeled_idx:
            rec_id = f"rec-b{i:010d}"
            ref = SENTENCES[i % len(SENTENCES)]
            hyp = ref if rng.random() < 0.8 else SENTENCES[(i + 1) % len(SENTENCES)]
            recs.append((rec_id, uuid.uuid4().hex * 2, f"file:///{rec_id}.wav", 16000, float(duration[i]), 1,
                         "production", "ko", rid, "{}", "{}", created))
            tasks.append((f"tsk-b{i:010d}", rec_id, 1, 0, "new", "submitted", created))
            labels.append((f"lbl-b{i:010d}", f"tsk-b{i:010d}", rec_id, 1, ref, "[]", "reviewed", created))
        utts.append((rid, f"dev-{i % 50_000}", cols["model_version"][i], hyp, float(conf[i]), 80.0, rec_id, created,
                     "http", "champion", float(duration[i]), cols["dialect"][i], cols["age_band"][i], env[i],
                     cols["device_type"][i], float(level[i]), float(snr[i]), float(rate[i]), 1))
    return utts, recs, tasks, labels


def feedback_rows(n: int, utts: list[tuple], seed: int = 1) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows = []
    for k, i in enumerate(rng.choice(len(utts), n, replace=False)):
        u = utts[int(i)]
        rows.append((f"voc-b{k:010d}", u[0], u[1], "misrecognized", "안 알아들어요", "new", u[7], "device",
                     u[11], u[12], u[13], u[14], "[]", 0))
    return rows


RECORDING_COLS = ("id", "sha256", "uri", "sample_rate", "duration", "channels", "source", "language", "external_id",
                  "qc", "meta", "created_at")
TASK_COLS = ("id", "recording_id", "round", "priority", "reason", "status", "created_at")
LABEL_COLS = ("id", "task_id", "recording_id", "round", "text", "flags", "status", "reviewed_at")
FEEDBACK_COLS = ("id", "request_id", "device_id", "category", "text", "status", "created_at", "source", "dialect",
                 "age_band", "environment", "device_type", "causes", "priority")
TABLES = (("recordings", RECORDING_COLS, 1), ("label_tasks", TASK_COLS, 2), ("labels", LABEL_COLS, 3),
          ("production_utterances", PU_COLUMNS, 0), ("feedback", FEEDBACK_COLS, 4))


def load_sqlite(path: Path, data: list[list[tuple]]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    with conn:
        for table, cols, k in TABLES:
            conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             data[k])
    conn.execute("ANALYZE")
    conn.close()


def load_postgresql(url: str, data: list[list[tuple]]) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as conn, conn.cursor() as cur:
        for table, cols, k in TABLES:
            with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in data[k]:
                    copy.write_row(_pg_row(table, row))
        conn.commit()
        cur.execute("ANALYZE")


def _pg_row(table: str, row: tuple) -> tuple:
    if table == "production_utterances":  # the boolean column, and timestamps in UTC
        return (*row[:7], row[7] + "+00", *row[8:18], bool(row[18]))
    if table in ("recordings", "label_tasks", "feedback"):
        i = {"recordings": 11, "label_tasks": 6, "feedback": 6}[table]
        return (*row[:i], row[i] + "+00", *row[i + 1:])
    return (*row[:7], row[7] + "+00")


def reference():
    rng = np.random.default_rng(9)
    return build_reference({"duration": rng.normal(2.0, 0.5, 20_000).tolist(),
                            "speech_dbfs": rng.normal(-22, 4, 20_000).tolist(),
                            "snr_db": rng.normal(25, 6, 20_000).tolist(),
                            "speech_rate": rng.normal(5, 1, 20_000).tolist()}, VERSIONS[0][0], "generated")


def baselines() -> dict[str, Baseline]:
    metrics = {"test_seen.wer": 0.15, "test_seen.cer": 0.08}
    for key, vocab in (("dialect", DIALECTS), ("age_band", AGES), ("environment", ENVIRONMENTS)):
        for value, _ in vocab:
            metrics |= {f"test_seen.n.{key}.{value}": 100.0, f"test_seen.wer.{key}.{value}": 0.15,
                        f"test_seen.cer.{key}.{value}": 0.08}
    b = Baseline.from_flat_metrics(VERSIONS[0][0], metrics, ["test_seen"])
    return {"": b, VERSIONS[0][0]: b}


def time_jobs(url: str) -> list[dict]:
    catalog = connect(url)
    ref, base = reference(), baselines()
    results = []
    for name, window_s, cfg in (("1h", HOUR, DriftConfig(labeled_window_s=7 * DAY)),
                                ("7d", 7 * DAY, DriftConfig(labeled_window_s=7 * DAY)),
                                ("7d again", 7 * DAY, DriftConfig(labeled_window_s=7 * DAY))):
        started = time.perf_counter()
        r = compute_window(catalog, END, window_s, baselines=base, reference=ref, config=cfg)
        results.append({"job": name, "window_s": window_s, "utterances": r.utterances, "labeled": r.labeled,
                        "rows": r.rows, "seconds": round(time.perf_counter() - started, 2)})
    started = time.perf_counter()
    summary = evaluate_alerts(catalog, END, 7 * DAY, AlertConfig(labeled_window_s=7 * DAY))
    results.append({"job": "alerts (7d)", "window_s": 7 * DAY, "utterances": None, "labeled": None,
                    "rows": len(summary.opened) + len(summary.continuing),
                    "seconds": round(time.perf_counter() - started, 2)})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=1_000_000)
    ap.add_argument("--labeled", type=int, default=2_000)
    ap.add_argument("--feedback", type=int, default=10_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("VOICELOOP_BENCH_PG_URL",
                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    started = time.perf_counter()
    utts, recs, tasks, labels = generate(args.utterances, args.labeled)
    data = [utts, recs, tasks, labels, feedback_rows(args.feedback, utts)]
    console.print(f"generated {len(utts):,} utterances ({len(recs):,} transcribed), {args.feedback:,} complaints "
                  f"in {time.perf_counter() - started:.1f} s")
    table = Table(title=f"drift job over {len(utts):,} production utterances (one week)")
    for col in ("database", "job", "window", "utterances in window", "labeled", "rows written", "seconds"):
        table.add_column(col, justify="left" if col in ("database", "job") else "right")
    report = {"utterances": len(utts), "labeled": len(recs), "feedback": args.feedback, "cpus": os.cpu_count(),
              "loadavg": os.getloadavg(), "results": {}}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'catalog.db'}"
                connect(url)
                load = time.perf_counter()
                load_sqlite(Path(tmp) / "catalog.db", data)
            elif backend == "postgresql":
                url, admin = _pg_database(args.pg_url)
                connect(url)
                load = time.perf_counter()
                load_postgresql(url, data)
            else:
                raise SystemExit(f"unknown backend {backend!r}; use sqlite and/or postgresql")
            console.print(f"{backend}: loaded in {time.perf_counter() - load:.1f} s")
            try:
                results = time_jobs(url)
            finally:
                dispose(url)
                if backend == "postgresql":
                    _drop_pg(admin, url)
        report["results"][backend] = results
        for r in results:
            table.add_row(backend, r["job"], f"{r['window_s'] // HOUR} h", _n(r["utterances"]), _n(r["labeled"]),
                          _n(r["rows"]), f"{r['seconds']:.2f}")
    console.print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    console.print(f"[dim]{OUT}")


def _n(x: int | None) -> str:
    return "—" if x is None else f"{x:,}"


def _pg_database(base: str) -> tuple[str, object]:
    from sqlalchemy import create_engine, text

    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"vl_bench_drift_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return base.rsplit("/", 1)[0] + "/" + name, admin


def _drop_pg(admin, url: str) -> None:  # noqa: ANN001 - an Engine
    from sqlalchemy import text

    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


if __name__ == "__main__":
    main()
