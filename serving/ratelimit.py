"""Per-device rate limits: a token bucket per device, in this process's memory.

Each API replica limits on its own, so behind a load balancer of N replicas a device gets at most
N × the rate; the limit protects a replica's CPU from one runaway device, which is what matters for
a 2-core box. A fleet-wide limit would move the buckets to Redis (same interface).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` requests per second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate, self.burst, self.clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """0.0 when ``key`` may go ahead (a token is taken), else the seconds until it may retry."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:  # forget full (idle) buckets: memory stays bounded
                    self._buckets = {k: b for k, b in self._buckets.items()
                                     if b.tokens + (now - b.updated) * self.rate < self.burst}
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate
