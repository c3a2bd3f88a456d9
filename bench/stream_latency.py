"""End of speech → final result, streaming: over the WebSocket and over Kafka, plus the endpointing path.

    .venv/bin/python bench/stream_latency.py                       # 30 utterances per path
    .venv/bin/python bench/stream_latency.py --model path/model.pt --utterances 50 --skip-kafka

Every utterance (a studio command) is streamed in 100 ms PCM16 chunks paced in real time, one at a time,
from one device:

- WebSocket, end marker: `voiceloop serve` in its own process; timed from sending ``{"type": "end"}``
  to receiving the final (serving.simulator's WsChannel);
- WebSocket, endpointing: no end marker; digital silence follows the utterance until the server's
  endpointer ends the stream; timed from sending the chunk that holds the last loud (> -40 dBFS) 10 ms
  frame. This path waits ``endpoint_silence_seconds`` (0.6 s) by design, so it is reported apart;
- Kafka: a tansu broker (infra.stack) and `voiceloop worker` in their own processes; the chunks and
  then the end message produced to ``asr.audio`` in real time; timed from producing the end message to
  the result arriving on ``asr.transcripts`` (read with a 20 ms fetch wait, so the reader adds little).
  Run three times: the worker as shipped (20 ms broker fetch wait, 20 ms micro-batch wait); with
  ``VOICELOOP_KAFKA_MAX_WAIT_MS=0`` (no wait for a micro-batch to fill); and with kafka-python's default
  500 ms fetch wait and a 50 ms batch wait (what the first cut shipped), to show why the defaults moved.

Target: p95 ≤ 150 ms for the end-marker paths. Output: a table and ``bench/out/stream_latency.json``.
"""

from __future__ import annotations

import argparse
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
    show_snapshot,
    start_server,
    start_worker,
    write_json,
)
from rich.table import Table

from serving.simulator import (
    FETCH_MAX_WAIT_MS,
    SimDevice,
    SimulationConfig,
    latency_stats,
    register_sim_devices,
    run_simulation,
)

TARGET_P95_MS = 150.0
CHUNK_MS = 100


def websocket_paths(url: str, device: SimDevice, cmds: list, timeout: float) -> dict[str, dict]:
    out = {}
    for name, send_end in (("websocket, end marker", True), ("websocket, endpointing (no end marker)", False)):
        config = SimulationConfig(url=url, via=("ws",), chunk_ms=CHUNK_MS, send_end=send_end, timeout_s=timeout)
        with OtherLoad() as other:
            summary = run_simulation(config, [device], cmds, progress=True)
        out[name] = {
            "latency_ms": latency_stats([o.latency_ms for o in summary.outcomes if o.ok]),
            "server_ms": latency_stats([o.answer["latency_ms"] for o in summary.outcomes if o.ok]),
            "errors": summary.errors, "first_errors": summary.first_errors(),
            "ended_by": {k: sum(1 for o in summary.outcomes if o.ok and o.answer.get("ended_by") == k)
                         for k in ("client", "endpoint", "max_duration")},
            "other_cores": other.cores, "other_top": other.top,
        }
    return out


def kafka_path(bootstrap: str, device_id: str, cmds: list, timeout: float, tag: str) -> dict:
    """Real-time paced chunks to asr.audio, the end message timed; results read from asr.transcripts."""
    from serving.worker.client import ensure_topics, make_producer, transcripts_consumer
    from serving.worker.messages import audio_headers

    topics = ensure_topics(bootstrap, prefix=f"{tag}-")  # each variant on its own topics
    producer = make_producer(bootstrap)
    # the measuring client must not add its own wait (kafka-python's default fetch wait of 500 ms does)
    consumer = transcripts_consumer(bootstrap, topic=topics.transcripts, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    enable_auto_commit=False)
    arrived: dict[str, tuple[float, dict]] = {}
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for r in records:
                    arrived.setdefault(r.key, (now, r.value))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not consumer.assignment() and time.monotonic() < deadline:
        time.sleep(0.1)
    step = 16000 * 2 * CHUNK_MS // 1000
    latencies, server_ms, errors = [], [], []
    run = f"kafka-{tag}-{int(time.time())}"
    try:
        # a first utterance, untimed: the worker joins its group (a few seconds) and loads its model
        for i, cmd in enumerate([cmds[0], *cmds]):
            sid = f"{run}-{i:04d}"
            t0 = time.perf_counter()
            chunks = [cmd.pcm16[o:o + step] for o in range(0, len(cmd.pcm16), step)]
            for seq, chunk in enumerate(chunks):
                if (wait := t0 + seq * CHUNK_MS / 1000 - time.perf_counter()) > 0:
                    time.sleep(wait)
                producer.send(topics.audio, key=sid.encode(), value=chunk, headers=audio_headers(seq, device_id))
            ended = time.perf_counter()
            producer.send(topics.audio, key=sid.encode(), value=b"",
                          headers=audio_headers(len(chunks), device_id, end=True))
            producer.flush()
            limit = time.monotonic() + (120 if i == 0 else timeout)
            while sid not in arrived and time.monotonic() < limit:
                time.sleep(0.001)
            if i == 0:
                continue
            if sid not in arrived:
                errors.append(f"{sid}: no result within {timeout} s")
                continue
            when, value = arrived[sid]
            latencies.append((when - ended) * 1000)
            server_ms.append(value.get("latency_ms"))
            if console.is_terminal:
                console.print(f"[dim]kafka {i}/{len(cmds)}: {(when - ended) * 1000:.0f} ms", end="\r")
    finally:
        stop.set()
        thread.join(5)
        consumer.close()
        producer.close(5)
    return {"latency_ms": latency_stats(latencies), "server_ms": latency_stats([s for s in server_ms if s is not None]),
            "errors": len(errors), "first_errors": errors[:5], "ended_by": {"client": len(latencies)}}


def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the accuracy benchmark's, else an untrained baseline)")
    ap.add_argument("--utterances", type=int, default=30, help="per path")
    ap.add_argument("--skip-kafka", action="store_true")
    ap.add_argument("--shipped-only", action="store_true", help="run the Kafka path with the shipped settings only")
    ap.add_argument("--timeout", type=float, default=15.0)
    ap.add_argument("--out", type=Path, default=OUT_DIR / "stream_latency.json")
    a = ap.parse_args()

    before = machine_snapshot()
    show_snapshot("before", before)
    model, model_desc = bench_model(a.model)
    console.print(f"model: {model_desc}")
    cmds = commands(a.utterances)
    console.print(f"{len(cmds)} studio commands, {min(c.duration_s for c in cmds):.2f}–"
                  f"{max(c.duration_s for c in cmds):.2f} s, streamed in {CHUNK_MS} ms chunks in real time")
    tmp = Path(tempfile.mkdtemp(prefix="vl-stream-latency-"))
    data_dir = tmp / "data"
    from voiceloop.settings import Settings

    device = register_sim_devices(Settings(data_dir=data_dir).catalog, 1, prefix="bench")[0]
    results: dict[str, dict] = {}
    server, url = start_server(data_dir, model, tmp / "serve.log")
    try:
        results.update(websocket_paths(url, device, cmds, a.timeout))
    finally:
        server.stop()
    if not a.skip_kafka:
        from infra.stack import start_broker

        broker = start_broker(log_path=tmp / "tansu.log")
        # name → worker settings
        variants: dict[str, dict] = {"kafka (worker as shipped)": {}}
        if not a.shipped_only:
            variants["kafka, KAFKA_MAX_WAIT_MS=0"] = {"kafka_max_wait_ms": 0}
            variants["kafka, KAFKA_FETCH_MAX_WAIT_MS=500, KAFKA_MAX_WAIT_MS=50 (first cut)"] = {
                "kafka_fetch_max_wait_ms": 500, "kafka_max_wait_ms": 50}
        try:
            for k, (name, worker_settings) in enumerate(variants.items()):
                worker = start_worker(data_dir, model, broker.bootstrap, tmp / f"worker{k}.log", group=f"bench{k}",
                                      kafka_topic_prefix=f"k{k}-", **worker_settings)
                try:
                    with OtherLoad() as other:
                        r = kafka_path(broker.bootstrap, device.device_id, cmds, a.timeout, f"k{k}")
                    results[name] = {**r, "other_cores": other.cores, "other_top": other.top}
                finally:
                    worker.stop()
        finally:
            broker.stop()
    after = machine_snapshot()

    t = Table("path", "n", "errors", "p50 ms", "p95 ms", "max ms", "server p50 ms", "ended by",
              "other processes' CPU", f"p95 ≤ {TARGET_P95_MS:.0f} ms", title="end of speech → final result")
    for name, r in results.items():
        lat = r["latency_ms"]
        verdict = "n/a (adds the endpoint silence)" if "endpointing" in name else (
            "[green]ok[/]" if r["errors"] == 0 and lat["p95"] is not None and lat["p95"] <= TARGET_P95_MS
            else "[red]over[/]")
        t.add_row(name, str(lat["n"]), str(r["errors"]), fmt(lat["p50"]), fmt(lat["p95"]), fmt(lat["max"]),
                  fmt(r["server_ms"]["p50"]), ", ".join(f"{k} {v}" for k, v in r["ended_by"].items() if v),
                  f"{100 * r['other_cores']:.0f} %", verdict)
    console.print(t)
    for name, r in results.items():
        for line in r["first_errors"]:
            console.print(f"[red]{name}: {line}")
    show_snapshot("after", after)
    path = write_json(a.out, {"model": model_desc, "chunk_ms": CHUNK_MS, "target_p95_ms": TARGET_P95_MS,
                              "utterances": [{"id": c.id, "text": c.text, "duration_s": round(c.duration_s, 3),
                                              "environment": c.environment} for c in cmds],
                              "paths": results, "machine_before": before, "machine_after": after})
    console.print(f"wrote {path}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
