"""HTTP serving under load: `voiceloop serve` in its own process, an open-loop generator in another.

    .venv/bin/python bench/http_load.py                      # trained model if bench/accuracy.py left one
    .venv/bin/python bench/http_load.py --model path/model.pt --steps 10,20,40,60,80 --step-duration 20

Phase 1: ``--rate`` (20) requests/s for ``--duration`` (60) s → p50/p95/p99 and errors; target p99 ≤ 250 ms.
Phase 2: the rate stepped up (``--steps``) for ``--step-duration`` s each, until p99 passes the target or a
request fails: the highest step that held is the sustained rate. Every request is a ~2 s studio command
(WAV, POST /v1/recognize) from one registered device; the per-device rate limit is lifted. Latency is
counted by the generator (bench/loadgen.py) from when each request was *due* (open loop, Poisson
arrivals), so queueing shows. Output: tables on stdout and ``bench/out/http_load.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _serving import (
    OUT_DIR,
    ROOT,
    OtherLoad,
    bench_model,
    commands,
    console,
    drop_database,
    fresh_database,
    machine_snapshot,
    register_device,
    show_snapshot,
    start_server,
    write_json,
)
from rich.table import Table

from serving.simulator import latency_stats

TARGET_P99_MS = 250.0


def load(url: str, key: str, wavs: list[Path], rate: float, duration: float, poisson: bool, seed: int,
         out: Path) -> dict:
    """Run bench/loadgen.py as a separate process; returns its requests plus the summary."""
    cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", url, "--key", key, "--rate", str(rate),
           "--duration", str(duration), "--seed", str(seed), "--out", str(out)]
    cmd += [a for w in wavs for a in ("--wav", str(w))] + ([] if poisson else ["--uniform"])
    subprocess.run(cmd, check=True, timeout=duration + 120)
    result = json.loads(out.read_text())
    reqs = result["requests"]
    ok = [r for r in reqs if r["status"] == 200]
    errors = [r for r in reqs if r["status"] != 200]
    result["summary"] = {
        "rate": rate, "sent": len(reqs), "ok": len(ok), "errors": len(errors),
        "error_kinds": sorted({(r.get("error") or "")[:80] for r in errors})[:5],
        "achieved_rate": round(len(reqs) / max(result["wall_s"], 1e-9), 2),
        "latency_ms": latency_stats([r["latency_ms"] for r in ok]),
        "server_ms": latency_stats([r["server_ms"] for r in ok if r.get("server_ms") is not None]),
        "late_ms_max": max((r["late_ms"] for r in reqs), default=0.0), "generator_cpu": result["generator_cpu"],
    }
    return result


def fmt(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def table(title: str, rows: list[dict], cpu: list[float | None]) -> Table:
    t = Table("req/s", "sent", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "server p50 ms", "server p99 ms",
              "server CPU", "generator CPU", "generator late max ms", "other processes' CPU",
              f"p99 ≤ {TARGET_P99_MS:.0f} ms",
              title=title)
    for s, c in zip(rows, cpu, strict=True):
        lat, srv = s["latency_ms"], s["server_ms"]
        held = s["errors"] == 0 and lat["p99"] is not None and lat["p99"] <= TARGET_P99_MS
        t.add_row(fmt(s["rate"]), str(s["sent"]), f"[red]{s['errors']}[/]" if s["errors"] else "0", fmt(lat["p50"]),
                  fmt(lat["p95"]), fmt(lat["p99"]), fmt(lat["max"]), fmt(srv["p50"], 1), fmt(srv["p99"], 1),
                  "–" if c is None else f"{100 * c:.0f} %", f"{100 * s['generator_cpu']:.0f} %",
                  fmt(s["late_ms_max"], 1), f"{100 * s['other_cores']:.0f} %",
                  "[green]ok[/]" if held else "[red]over[/]")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint to serve (default: the accuracy benchmark's, else an untrained "
                                    "baseline-architecture model)")
    ap.add_argument("--rate", type=float, default=20.0, help="phase 1 requests/s")
    ap.add_argument("--duration", type=float, default=60.0, help="phase 1 seconds")
    ap.add_argument("--steps", default="10,20,25,30,40,60,80,120",
                    help="phase 2 rates (requests/s); an empty string skips phase 2")
    ap.add_argument("--step-duration", type=float, default=20.0)
    ap.add_argument("--uniform", action="store_true", help="evenly spaced arrivals instead of Poisson")
    ap.add_argument("--decoder", default="greedy", help="the server's decoder (VOICELOOP_DECODER)")
    ap.add_argument("--catalog-server", metavar="URL",
                    help="put the catalog in a fresh database on this PostgreSQL server "
                         "(postgresql+psycopg://postgres@127.0.0.1:5432/postgres) instead of SQLite in the temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir (server log, catalog)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "http_load.json")
    a = ap.parse_args()
    poisson = not a.uniform

    before = machine_snapshot()
    show_snapshot("before", before)
    model, model_desc = bench_model(a.model)
    console.print(f"model: {model_desc}")
    cmds = commands(12, min_s=1.8, max_s=2.2)
    tmp = Path(tempfile.mkdtemp(prefix="vl-http-load-"))
    wavs = []
    for c in cmds:
        (tmp / "wav").mkdir(exist_ok=True)
        wavs.append(tmp / "wav" / f"{c.id}.wav")
        wavs[-1].write_bytes(c.wav)
    console.print(f"requests: {len(cmds)} studio commands, {min(c.duration_s for c in cmds):.2f}–"
                  f"{max(c.duration_s for c in cmds):.2f} s, sent in turn; arrivals "
                  f"{'Poisson' if poisson else 'evenly spaced'}")
    data_dir = tmp / "data"
    catalog_url = fresh_database(a.catalog_server) if a.catalog_server else None
    catalog = "PostgreSQL" if catalog_url else "SQLite"
    _, key = register_device(data_dir, catalog_url=catalog_url)
    overrides = {"catalog_url": catalog_url} if catalog_url else {}
    server, url = start_server(data_dir, model, tmp / "serve.log", decoder=a.decoder, **overrides)
    console.print(f"server: {url} (pid {server.popen.pid}, 1 torch thread, {catalog} catalog "
                  f"{catalog_url or data_dir})")
    if shutil.which("wrk"):
        console.print("[dim]wrk is installed: cross-check with `wrk -t1 -c8 -d20s -R20` (wrk2) by hand; "
                      "this benchmark's figures come from bench/loadgen.py")

    def measured(rate: float, duration: float, name: str) -> tuple[dict, float]:
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        with OtherLoad() as other:
            result = load(url, key, wavs, rate, duration, poisson, 1, tmp / f"{name}.json")
        cpu = (server.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        result["summary"].update(server_cpu=round(cpu, 3), other_cores=other.cores, other_top=other.top)
        return result, cpu

    try:
        load(url, key, wavs, 5, 4, poisson, 0, tmp / "warmup.json")  # connections, allocator, first-call paths
        console.rule(f"phase 1: {a.rate:g} req/s for {a.duration:g} s")
        phase1, cpu1 = measured(a.rate, a.duration, "phase1")
        console.print(table(f"phase 1: {a.rate:g} req/s for {a.duration:g} s", [phase1["summary"]], [cpu1]))
        console.rule("phase 2: stepping the rate")
        steps, cpus = [], []
        for rate in (float(x) for x in a.steps.split(",") if x.strip()):
            time.sleep(2)  # let any queue from the last step drain
            result, cpu = measured(rate, a.step_duration, f"step-{rate:g}")
            s = result["summary"]
            steps.append(s)
            cpus.append(cpu)
            console.print(f"{rate:g} req/s: p99 {fmt(s['latency_ms']['p99'])} ms, {s['errors']} errors, "
                          f"server CPU {100 * cpu:.0f} %, other processes {100 * s['other_cores']:.0f} % "
                          f"{'; '.join(s['other_top'])}")
            if s["errors"] or (s["latency_ms"]["p99"] or 1e9) > TARGET_P99_MS:
                break
    finally:
        server.stop()
        if catalog_url:
            drop_database(a.catalog_server, catalog_url)
    after = machine_snapshot()
    held = [s["rate"] for s in steps if not s["errors"] and (s["latency_ms"]["p99"] or 1e9) <= TARGET_P99_MS]
    sustained = max(held) if held else None
    if steps:
        console.print(table(f"phase 2: {a.step_duration:g} s per step", steps, cpus))
    p1 = phase1["summary"]
    verdict = (p1["errors"] == 0 and p1["latency_ms"]["p99"] is not None
               and p1["latency_ms"]["p99"] <= TARGET_P99_MS)
    console.print(f"catalog: {catalog}; phase 1 target p99 ≤ {TARGET_P99_MS:.0f} ms at {a.rate:g} req/s: "
                  f"{'[green]met' if verdict else '[red]missed'}[/]; highest sustained rate: "
                  f"{fmt(sustained)} req/s")
    show_snapshot("after", after)
    path = write_json(a.out, {
        "model": model_desc, "decoder": a.decoder, "catalog": catalog, "poisson": poisson,
        "target_p99_ms": TARGET_P99_MS,
        "commands": [{"id": c.id, "text": c.text, "duration_s": round(c.duration_s, 3)} for c in cmds],
        "phase1": {**p1, "requests": phase1["requests"]}, "phase2": steps, "sustained_rate": sustained,
        "phase1_target_met": verdict, "machine_before": before, "machine_after": after})
    console.print(f"wrote {path}")
    if a.keep:
        console.print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
