"""Open-loop HTTP load generator for POST /v1/recognize (run by bench/http_load.py as its own process).

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:8000 --key vlk_… --wav a.wav --wav b.wav \
        --rate 20 --duration 60 --out result.json

Request i is due at a fixed time (``--rate`` per second, Poisson arrivals unless ``--uniform``) whether
or not earlier requests were answered, and its latency is counted from when it was *due*, not from
when it happened to go out. A closed-loop tester (locust, ab, a thread per virtual user) waits for each
answer before the next request: when the server stalls it stops sending, so the requests that would
have queued behind the stall are never timed (coordinated omission) and the percentiles look better
than what devices see. ``late_ms`` records how far behind schedule this generator itself fell; if it
grows, the generator (not the server) is the bottleneck and the run is not valid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from pathlib import Path

import httpx

from serving.simulator import arrival_offsets


async def run(url: str, key: str, bodies: list[bytes], rate: float, duration: float, poisson: bool, seed: int,
              timeout: float) -> dict:
    n = max(1, int(round(rate * duration)))
    due = arrival_offsets(n, rate, poisson, seed)
    tag = secrets.token_hex(3)
    results: list[dict] = []
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, trust_env=False) as client:
        # one connection opened before the clock starts, so the first request does not pay for it
        await client.get("/healthz")
        t0 = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            if (wait := t0 + due[i] - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            sent = time.perf_counter()
            record = {"i": i, "due_s": round(float(due[i]), 4), "late_ms": round((sent - t0 - due[i]) * 1e3, 2)}
            headers = {"authorization": f"Bearer {key}", "content-type": "audio/wav",
                       "x-request-id": f"load-{tag}-{i:06d}"}
            try:
                r = await client.post("/v1/recognize", content=bodies[i % len(bodies)], headers=headers)
                record["status"] = r.status_code
                if r.status_code == 200:
                    record["server_ms"] = r.json().get("latency_ms")
                else:
                    record["error"] = r.text[:200]
            except httpx.HTTPError as e:
                record["status"] = 0
                record["error"] = f"{type(e).__name__}: {e}"[:200]
            done = time.perf_counter()
            record["latency_ms"] = round((done - t0 - due[i]) * 1e3, 2)  # from when it was due
            record["service_ms"] = round((done - sent) * 1e3, 2)  # from when it went out
            results.append(record)

        cpu0 = time.process_time()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
        cpu = (time.process_time() - cpu0) / wall  # this generator's share of a core
    results.sort(key=lambda r: r["i"])
    return {"rate": rate, "duration_s": duration, "poisson": poisson, "sent": n, "wall_s": round(wall, 3),
            "generator_cpu": round(cpu, 3), "requests": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True, help="device key (vlk_…)")
    ap.add_argument("--wav", action="append", required=True, type=Path, help="WAV body; repeat for several")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    ap.add_argument("--uniform", action="store_true", help="evenly spaced arrivals instead of Poisson")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as failed")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    bodies = [p.read_bytes() for p in a.wav]
    result = asyncio.run(run(a.url, a.key, bodies, a.rate, a.duration, not a.uniform, a.seed, a.timeout))
    a.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
