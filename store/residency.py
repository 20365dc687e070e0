"""The model caches' shared counters and gauges in Redis: written by the inference workers, read by /metrics.

Stdlib + redis only (the API imports it). Two hashes:
- COUNTERS, summed over every worker process that ever reported: `hits` and `misses` (requests whose version
  was / was not in memory), `loads`, `load_failures`, `evictions`, `handoffs` (requests handed to a worker that
  held their version: worker/warm_routing.py), and the cold-load histogram: `load_s:{bound}`
  per bucket (not cumulative; cumulated at scrape time like the batch sizes), `load_seconds_sum`.
- RESIDENT, one field per worker process (its consumer name): JSON `{"bytes", "budget", "models", "device",
  "at"}`, rewritten by the process every few seconds and removed when it stops; a field older than STALE_S
  belongs to a process that died and is ignored.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from store import keys

COUNTERS = keys.INFERENCE_RESIDENCY
RESIDENT = keys.INFERENCE_RESIDENT
LOAD_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COUNTER_NAMES = ("hits", "misses", "loads", "load_failures", "evictions", "handoffs")
STALE_S = 30.0


def load_seconds_field(seconds: float) -> str:
    for bound in LOAD_SECONDS_BUCKETS:
        if seconds <= bound:
            return f"load_s:{bound!r}"
    return "load_s:inf"


def add_counts(client: redis.Redis, counts: dict[str, float]) -> None:
    """Add a worker's increments to the shared counters in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        for name, amount in counts.items():
            if name == "load_seconds_sum":
                pipe.hincrbyfloat(COUNTERS, name, amount)
            elif amount:
                pipe.hincrby(COUNTERS, name, int(amount))
        pipe.execute()


def report_resident(client: redis.Redis, consumer: str, record: dict[str, Any]) -> None:
    client.hset(RESIDENT, consumer, json.dumps({**record, "at": time.time()}))


def forget_resident(client: redis.Redis, consumer: str) -> None:
    client.hdel(RESIDENT, consumer)


def counters(client: redis.Redis) -> dict[str, float]:
    """The shared counters; 0 for what was never counted."""
    raw: Any = client.hgetall(COUNTERS)
    out: dict[str, float] = dict.fromkeys(COUNTER_NAMES, 0.0)
    out["load_seconds_sum"] = 0.0
    for key, value in raw.items():
        out[key.decode() if isinstance(key, bytes) else key] = float(value)
    return out


def load_seconds_histogram(counts: dict[str, float]) -> tuple[list[tuple[str, float]], float]:
    """(cumulative buckets, sum) of the cold-load seconds, for a Prometheus histogram."""
    buckets, running = [], 0.0
    for bound in LOAD_SECONDS_BUCKETS:
        running += counts.get(f"load_s:{bound!r}", 0.0)
        buckets.append((repr(bound), running))
    running += counts.get("load_s:inf", 0.0)
    buckets.append(("+Inf", running))
    return buckets, counts.get("load_seconds_sum", 0.0)


def resident(client: redis.Redis, now: float | None = None) -> dict[str, dict[str, Any]]:
    """The live worker processes' cache records, by consumer name (stale ones left out)."""
    now = time.time() if now is None else now
    out = {}
    raw: Any = client.hgetall(RESIDENT)
    for key, value in raw.items():
        try:
            record = json.loads(value)
        except ValueError:
            continue
        if isinstance(record, dict) and now - float(record.get("at", 0)) < STALE_S:
            out[key.decode() if isinstance(key, bytes) else key] = record
    return out
