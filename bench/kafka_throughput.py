"""Kafka worker throughput: a backlog of utterances in asr.audio, drained by 1 or 2 `voiceloop worker` processes.

    .venv/bin/python bench/kafka_throughput.py                     # 800 utterances, the four setups below
    .venv/bin/python bench/kafka_throughput.py --utterances 800 --setups 1x8,2x8

A setup ``WxB`` is W worker processes in one consumer group (one torch thread each) with micro-batches of
at most B utterances (``VOICELOOP_KAFKA_MAX_BATCH``; a batch waits at most ``VOICELOOP_KAFKA_MAX_WAIT_MS``
to fill). Each setup gets fresh topics (its own prefix, 4 partitions) and a fresh catalog, so nothing
is skipped as already recorded. The backlog is produced first (whole utterances, 0.2 s chunks + end
message, `send_utterance`); then the workers start. Throughput is counted once every worker holds its
share of the partitions (read from the workers' "partitions assigned" log lines), from then to the
last result on asr.transcripts: utterances/s and audio seconds per wall second. Output: a table and
``bench/out/kafka_throughput.json``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from _serving import (
    OUT_DIR,
    OtherLoad,
    bench_model,
    commands,
    console,
    machine_snapshot,
    register_device,
    show_snapshot,
    start_worker,
    write_json,
)
from rich.table import Table

PARTITIONS = 4
ASSIGNED = re.compile(r"partitions assigned: ([0-9, ]+|none)")


def assignments(logs: list[Path]) -> list[set[int]]:
    """Each worker's latest assignment, from its log."""
    out = []
    for log in logs:
        found = ASSIGNED.findall(log.read_text(errors="replace")) if log.exists() else []
        last = found[-1] if found else "none"
        out.append(set() if last == "none" else {int(p) for p in last.split(",")})
    return out


def settled(logs: list[Path]) -> bool:
    """Every worker holds partitions and together they hold each exactly once."""
    held = assignments(logs)
    return all(held) and sum(len(h) for h in held) == PARTITIONS and set().union(*held) == set(range(PARTITIONS))


def run_setup(name: str, workers: int, batch: int, model: Path, bootstrap: str, cmds: list, root: Path,
              timeout: float) -> dict:
    from serving.simulator import FETCH_MAX_WAIT_MS
    from serving.worker.client import ensure_topics, make_producer, send_utterance, transcripts_consumer

    prefix = f"bench-{name}-{int(time.time())}-"
    data_dir = root / name
    device_id, _ = register_device(data_dir)
    topics = ensure_topics(bootstrap, partitions=PARTITIONS, prefix=prefix)
    producer = make_producer(bootstrap)
    t0 = time.perf_counter()
    for i, cmd in enumerate(cmds):
        send_utterance(producer, f"tp-{i:05d}", device_id, cmd.pcm16, topic=topics.audio)
    producer.flush(60)
    producer.close(5)
    preload_s = time.perf_counter() - t0
    audio_s = sum(c.duration_s for c in cmds)

    arrived: dict[str, float] = {}
    stop = threading.Event()
    consumer = transcripts_consumer(bootstrap, topic=topics.transcripts, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    enable_auto_commit=False)

    def consume() -> None:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for r in records:
                    arrived.setdefault(r.key, now)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    logs = [root / f"{name}-worker{k}.log" for k in range(workers)]
    with OtherLoad() as other:
        started = time.perf_counter()
        procs = [start_worker(data_dir, model, bootstrap, log, group=f"{prefix}group", kafka_topic_prefix=prefix,
                              kafka_max_batch=batch) for log in logs]
        try:
            deadline = time.monotonic() + timeout
            while not settled(logs) and time.monotonic() < deadline and all(p.alive() for p in procs):
                time.sleep(0.05)
            t_settled, done_at_settle = time.perf_counter(), len(arrived)
            held = assignments(logs)
            while len(arrived) < len(cmds) and time.monotonic() < deadline and all(p.alive() for p in procs):
                time.sleep(0.05)
            cpu = [p.cpu_seconds() for p in procs]
        finally:
            for p in procs:
                p.stop()
            stop.set()
            reader.join(5)
            consumer.close()
    done = len(arrived)
    last = max(arrived.values()) if arrived else t_settled
    counted = done - done_at_settle
    window = last - t_settled
    return {
        "setup": name, "workers": workers, "max_batch": batch, "utterances": len(cmds), "answered": done,
        "preload_s": round(preload_s, 2), "audio_s": round(audio_s, 1),
        "settle_s": round(t_settled - started, 2), "assignments": [sorted(h) for h in held],
        "answered_before_settled": done_at_settle, "counted": counted, "window_s": round(window, 2),
        "utt_per_s": round(counted / window, 2) if window > 0 and counted else None,
        "audio_s_per_s": round(counted / window * audio_s / len(cmds), 1) if window > 0 and counted else None,
        "drain_s": round(last - started, 2), "worker_cpu_s": [round(c, 1) for c in cpu],
        "other_cores": other.cores, "other_top": other.top,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the accuracy benchmark's, else an untrained baseline)")
    ap.add_argument("--utterances", type=int, default=800)
    ap.add_argument("--setups", default="1x8,2x8,1x1,2x1", help="WORKERSxMAX_BATCH, comma-separated")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per setup")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "kafka_throughput.json")
    a = ap.parse_args()

    from infra.stack import start_broker

    before = machine_snapshot()
    show_snapshot("before", before)
    model, model_desc = bench_model(a.model)
    console.print(f"model: {model_desc}")
    distinct = commands(min(a.utterances, 80))
    cmds = [distinct[i % len(distinct)] for i in range(a.utterances)]
    console.print(f"{len(cmds)} utterances ({len(distinct)} distinct studio commands, "
                  f"{sum(c.duration_s for c in cmds) / 60:.1f} min of audio)")
    root = Path(tempfile.mkdtemp(prefix="vl-kafka-throughput-"))
    broker = start_broker(log_path=root / "tansu.log")
    results = []
    try:
        for setup in a.setups.split(","):
            workers, batch = (int(x) for x in setup.lower().split("x"))
            console.rule(f"{workers} worker(s), micro-batches of ≤ {batch}")
            r = run_setup(setup, workers, batch, model, broker.bootstrap, cmds, root, a.timeout)
            console.print(f"{r['utt_per_s']} utterances/s over {r['counted']} (settled {r['settle_s']} s after the "
                          f"start, partitions {r['assignments']}); other processes {100 * r['other_cores']:.0f} %")
            results.append(r)
    finally:
        broker.stop()
    after = machine_snapshot()

    t = Table("workers", "max batch", "answered", "utterances/s", "audio s per s", "counted", "window s",
              "settle s", "preload s", "worker CPU s", "other processes' CPU",
              title=f"Kafka throughput ({a.utterances} utterances backlog)")
    for r in results:
        t.add_row(str(r["workers"]), str(r["max_batch"]), f"{r['answered']}/{r['utterances']}",
                  "–" if r["utt_per_s"] is None else f"{r['utt_per_s']:.1f}",
                  "–" if r["audio_s_per_s"] is None else f"{r['audio_s_per_s']:.0f}", str(r["counted"]),
                  f"{r['window_s']:.1f}", f"{r['settle_s']:.1f}", f"{r['preload_s']:.1f}",
                  " + ".join(f"{c:.0f}" for c in r["worker_cpu_s"]), f"{100 * r['other_cores']:.0f} %")
    console.print(t)
    show_snapshot("after", after)
    path = write_json(a.out, {"model": model_desc, "partitions": PARTITIONS, "setups": results,
                              "machine_before": before, "machine_after": after})
    console.print(f"wrote {path}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
