"""VOC queries at scale: the rate per 1,000 utterances per slice, the inbox and one complaint, in-process.

    .venv/bin/python bench/voc_rate.py                                  # 1,000,000 utterances, 10,000 VOC, SQLite
    .venv/bin/python bench/voc_rate.py --catalog-server postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Generates 30 days of production utterances ending now (slices drawn from the device-profile
vocabularies, a few devices per slice mix) and complaints linked to random utterances, bulk-inserts
them into a fresh catalog (then ANALYZE: a catalog in service has planner statistics), then times each
query (``--repeat`` runs; the first, which rolls up hours never read before, is reported apart) — the
library functions the ops API routes call, without HTTP. Output: a table and ``bench/out/voc_rate.json``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from _serving import OUT_DIR, console, drop_database, fresh_database, write_json
from rich.table import Table

from serving.simulator import latency_stats

DIALECTS = ("standard", "standard", "standard", "gyeongsang", "jeolla", "chungcheong", None)
AGES = ("20s", "30s", "40s", "50s", "60s", "70s+", None)
ENVS = ("quiet", "tv", "kitchen", "far_field", None)
CAUSES = ("low_confidence", "low_snr", "out_of_grammar", "endpoint_cutoff")
STATUSES = ("new", "triaged", "labeled", "fixed", "closed")
CATEGORIES = ("misrecognized", "wrong_action", "no_response", "too_slow", "other")


def populate(url: str, n: int, voc: int, seed: int = 0) -> tuple[float, str]:
    """Bulk-insert ``n`` utterances and ``voc`` complaints; returns (seconds, one complaint id)."""
    from sqlalchemy import insert, text

    from collection.db import connect
    from collection.models import Feedback, FeedbackUtterance, ProductionUtterance, utcnow

    rng = np.random.default_rng(seed)
    now = utcnow()
    start = now - timedelta(days=30)
    offsets = np.sort(rng.uniform(0, 30 * 86400, n))
    devices = rng.integers(0, 5000, n)
    t0 = time.perf_counter()
    catalog = connect(url)
    with catalog() as s:
        for lo in range(0, n, 50_000):
            rows = [{"request_id": f"r{i:08d}", "device_id": f"dev-{devices[i]:04d}", "model_version": "3",
                     "confidence": float(rng.uniform()), "latency_ms": 20.0, "duration_s": 1.8, "channel": "http",
                     "created_at": start + timedelta(seconds=float(offsets[i])),
                     "dialect": DIALECTS[devices[i] % 7], "age_band": AGES[devices[i] % 7 if i % 2 else 3],
                     "environment": ENVS[devices[i] % 5], "device_type": "speaker",
                     "snr_db": float(rng.normal(20, 8)), "speech_dbfs": -25.0, "speech_rate": 6.0,
                     "in_grammar": bool(i % 9)}
                    for i in range(lo, min(n, lo + 50_000))]
            s.execute(insert(ProductionUtterance), rows)
        picked = rng.choice(n, size=voc, replace=False)
        feedback, links = [], []
        for k, i in enumerate(picked):
            fid = f"voc-{k:08d}"
            at = start + timedelta(seconds=float(offsets[i]))
            causes = [c for j, c in enumerate(CAUSES) if (k >> j) & 1]
            feedback.append({"id": fid, "request_id": f"r{i:08d}", "device_id": f"dev-{devices[i]:04d}",
                             "category": CATEGORIES[k % 5], "text": "불 켜랬는데 안 돼요", "status": STATUSES[k % 5],
                             "created_at": at + timedelta(minutes=1), "occurred_at": at, "source": "device",
                             "causes": causes, "priority": 10 * len(causes), "updated_at": at,
                             "dialect": DIALECTS[devices[i] % 7], "age_band": AGES[devices[i] % 7],
                             "environment": ENVS[devices[i] % 5], "device_type": "speaker"})
            links.append({"feedback_id": fid, "request_id": f"r{i:08d}"})
        s.execute(insert(Feedback), feedback)
        s.execute(insert(FeedbackUtterance), links)
        s.commit()
        s.execute(text("ANALYZE"))  # a catalog in service has planner statistics (autovacuum, or this)
        s.commit()
    return time.perf_counter() - t0, feedback[0]["id"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", type=int, default=1_000_000)
    ap.add_argument("--voc", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=6)
    ap.add_argument("--catalog-server", metavar="URL", help="a PostgreSQL server for the catalog (fresh database)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "voc_rate.json")
    a = ap.parse_args()

    from collection.db import connect
    from collection.models import utcnow
    from monitoring.voc_queries import FeedbackFilter, feedback_detail, list_feedback, voc_rate

    tmp = Path(tempfile.mkdtemp(prefix="vl-voc-rate-"))
    url = fresh_database(a.catalog_server) if a.catalog_server else f"sqlite:///{tmp / 'catalog.db'}"
    backend = "PostgreSQL" if a.catalog_server else "SQLite"
    try:
        with console.status(f"inserting {a.utterances:,} utterances and {a.voc:,} complaints ({backend})"):
            insert_s, some_id = populate(url, a.utterances, a.voc)
        now = utcnow()
        day, week, month = now - timedelta(days=1), now - timedelta(days=7), now - timedelta(days=30)
        queries = {
            "rate 7 d daily, all": lambda s: voc_rate(s, since=week, until=now),
            "rate 30 d daily by dialect": lambda s: voc_rate(s, since=month, until=now, slice_key="dialect"),
            "rate 30 d hourly by environment": lambda s: voc_rate(s, since=month, until=now, bucket_s=3600,
                                                                  slice_key="environment"),
            "rate 24 h hourly by age band": lambda s: voc_rate(s, since=day, until=now, bucket_s=3600,
                                                               slice_key="age_band"),
            "inbox (50, no filter)": lambda s: list_feedback(s),
            "inbox dialect+status": lambda s: list_feedback(s, FeedbackFilter(slice_key="dialect",
                                                                              slice_value="jeolla", status="new")),
            "inbox cause low_snr, 7 d": lambda s: list_feedback(s, FeedbackFilter(cause="low_snr", since=week)),
            "one complaint (detail)": lambda s: feedback_detail(s, some_id),
        }
        catalog = connect(url)
        rows = []
        for name, query in queries.items():
            times = []
            for _ in range(a.repeat):
                with catalog() as session:
                    t0 = time.perf_counter()
                    query(session)
                    session.commit()  # as the route does: keeps the hourly rollups a rate query computed
                    times.append((time.perf_counter() - t0) * 1e3)
            # the first call is reported apart: a rate query over hours never read rolls them up once
            rows.append({"query": name, "first_ms": round(times[0], 1), **latency_stats(times[1:])})
    finally:
        if a.catalog_server:
            drop_database(a.catalog_server, url)
        shutil.rmtree(tmp, ignore_errors=True)

    t = Table("query", "first ms", "p50 ms", "p95 ms", "max ms",
              title=f"VOC queries, {backend}: {a.utterances:,} utterances, {a.voc:,} complaints "
                    f"(inserted in {insert_s:.0f} s), {a.repeat - 1} timed runs each")
    for r in rows:
        t.add_row(r["query"], f"{r['first_ms']:.0f}", f"{r['p50']:.1f}", f"{r['p95']:.1f}", f"{r['max']:.1f}")
    console.print(t)
    path = write_json(a.out, {"backend": backend, "utterances": a.utterances, "voc": a.voc, "rows": rows})
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
