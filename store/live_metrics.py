"""Live, per-version serving metrics: requests, errors, latency, the prediction distribution, shadow agreement.
Stdlib + redis only (the API reads them; the inference worker writes them).

Each version has one hash per minute (TTL two hours: the longest window is one hour) and one total hash (the
Prometheus counters and a rollout's per-step deltas), with the same fields:
  req, err            requests answered / failed (a request is one job, whatever its rows)
  lat:{bound}, lat_sum  request latency in ms (enqueue to answer), bucket counts (not cumulative) and sum
  rows                rows predicted; cls:{label} per predicted class; or, for regression, rn, rsum, rsq and
                      rb:{bin} (signed log2 bins, 8 per octave: quantiles within ~5 %)
  sreq, serr          requests copied to this version as a shadow, and those that failed
  sh_n, sh_agree, sh_absdiff  shadow rows compared with the primary's answer, those that agreed (same label;
                      regression: within 10 %), and the sum of absolute differences
The fields are bounded (latency and value bins are fixed, labels are the model's classes), so memory is bounded
by versions × windows. The worker adds one batch's figures in the pipeline that answers the batch: no extra
round trip per request.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from store import keys

LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)
BUCKET_TTL_S = 2 * 3600
TOTAL_TTL_S = 30 * 86400  # refreshed by every write: a version that stopped serving fades after a month
WINDOWS = {"5m": 5, "1h": 60}
BINS_PER_OCTAVE = 8
MAX_LABEL = 64
REL_AGREEMENT = 0.1


def latency_field(ms: float) -> str:
    for bound in LATENCY_BOUNDS_MS:
        if ms <= bound:
            return f"lat:{bound}"
    return "lat:inf"


def value_bin(value: float) -> int:
    """A signed log2 bin: 0 for |value| < 2**-20, else ±(1 + 8·(log2|value| + 20)), bounded."""
    magnitude = abs(value)
    if not math.isfinite(value) or magnitude < 2**-20:
        return 0
    index = 1 + min(400, max(0, round((math.log2(magnitude) + 20) * BINS_PER_OCTAVE)))
    return index if value > 0 else -index


def bin_value(index: int) -> float:
    if index == 0:
        return 0.0
    magnitude = 2 ** ((abs(index) - 1) / BINS_PER_OCTAVE - 20)
    return magnitude if index > 0 else -magnitude


@dataclass
class VersionFigures:
    """One batch's figures for one version, added up before they are written."""

    counts: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def request(self, latency_ms: float, error: bool, shadow: bool = False) -> None:
        self.counts["sreq" if shadow else "req"] += 1
        if error:
            self.counts["serr" if shadow else "err"] += 1
        if not shadow:
            self.counts[latency_field(latency_ms)] += 1
            self.counts["lat_sum"] += latency_ms

    def predictions(self, labels: Iterable[Any] | None = None, values: Iterable[float] | None = None) -> None:
        for label in labels or ():
            self.counts["rows"] += 1
            self.counts[f"cls:{str(label)[:MAX_LABEL]}"] += 1
        for value in values or ():
            v = float(value)
            self.counts["rows"] += 1
            self.counts["rn"] += 1
            self.counts["rsum"] += v
            self.counts["rsq"] += v * v
            self.counts[f"rb:{value_bin(v)}"] += 1

    def agreement(self, primary: list[Any], shadow: list[Any], regression: bool) -> None:
        for a, b in zip(primary, shadow, strict=True):
            self.counts["sh_n"] += 1
            if regression:
                diff = abs(float(a) - float(b))
                self.counts["sh_absdiff"] += diff
                self.counts["sh_agree"] += diff <= REL_AGREEMENT * max(abs(float(a)), 1e-12)
            else:
                self.counts["sh_agree"] += str(a) == str(b)


class LiveBatch:
    """Everything one inference batch adds, per (tenant, model, version)."""

    def __init__(self) -> None:
        self.versions: defaultdict[tuple[str, str, int], VersionFigures] = defaultdict(VersionFigures)

    def __getitem__(self, key: tuple[str, str, int]) -> VersionFigures:
        return self.versions[key]

    def write_in(self, pipe: Pipeline, now: float | None = None) -> None:
        """Queue the increments on `pipe` (the caller executes it with the batch's answers)."""
        minute = int((now or time.time()) // 60)
        for (tenant, model, version), figures in self.versions.items():
            if not figures.counts:
                continue
            for key, ttl in (
                (keys.live_bucket(tenant, model, version, minute), BUCKET_TTL_S),
                (keys.live_total(tenant, model, version), TOTAL_TTL_S),
            ):
                for name, value in figures.counts.items():
                    if value == int(value):
                        pipe.hincrby(key, name, int(value))
                    else:
                        pipe.hincrbyfloat(key, name, value)
                pipe.expire(key, ttl)
            pipe.zadd(keys.LIVE_INDEX, {f"{tenant}/{model}/{version}": minute})


def _decode(raw: dict[Any, Any]) -> dict[str, float]:
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


def read_window(client: redis.Redis, tenant: str, model: str, version: int, minutes: int) -> dict[str, float]:
    """The fields summed over the last `minutes` minute buckets (the current one included): one round trip."""
    now = int(time.time() // 60)
    with client.pipeline(transaction=False) as pipe:
        for minute in range(now - minutes + 1, now + 1):
            pipe.hgetall(keys.live_bucket(tenant, model, version, minute))
        buckets = pipe.execute()
    total: defaultdict[str, float] = defaultdict(float)
    for bucket in buckets:
        for name, value in _decode(bucket).items():
            total[name] += value
    return dict(total)


def read_total(client: redis.Redis, tenant: str, model: str, version: int) -> dict[str, float]:
    raw: Any = client.hgetall(keys.live_total(tenant, model, version))
    return _decode(raw)


def minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """What was added between two reads of a total (a rollout step's own figures)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def quantile_from(counts: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of (value, count) pairs sorted by value: the value of the bin it falls in."""
    n = sum(c for _, c in counts)
    if n <= 0:
        return None
    target, running = q * n, 0.0
    for value, count in counts:
        running += count
        if running >= target:
            return value
    return counts[-1][0]


def summary(fields: dict[str, float]) -> dict[str, Any]:
    """The figures the API and a rollout's guard read: rates, latency quantiles, distribution, agreement."""
    req, err = fields.get("req", 0.0), fields.get("err", 0.0)
    latency = sorted(
        (float("inf") if k == "lat:inf" else float(k[4:]), v) for k, v in fields.items() if k.startswith("lat:")
    )
    out: dict[str, Any] = {
        "requests": int(req),
        "errors": int(err),
        "error_rate": err / req if req else 0.0,
        "rows": int(fields.get("rows", 0)),
        "latency_ms": {
            "mean": fields.get("lat_sum", 0.0) / req if req else None,
            "p50": quantile_from(latency, 0.5),
            "p90": quantile_from(latency, 0.9),
            "p99": quantile_from(latency, 0.99),
            "buckets": {("+Inf" if b == float("inf") else str(int(b))): int(c) for b, c in latency},
        },
        "shadow": None,
    }
    classes = {k[4:]: v for k, v in fields.items() if k.startswith("cls:") and v > 0}  # a step's delta has zeros
    if classes:
        rows = sum(classes.values())
        out["predictions"] = {"classes": {k: v / rows for k, v in sorted(classes.items())}}
    elif fields.get("rn", 0.0) > 0:
        n, s, sq = fields["rn"], fields.get("rsum", 0.0), fields.get("rsq", 0.0)
        bins = sorted((bin_value(int(k[3:])), v) for k, v in fields.items() if k.startswith("rb:"))
        out["predictions"] = {
            "mean": s / n,
            "std": math.sqrt(max(0.0, sq / n - (s / n) ** 2)),
            "quantiles": {f"p{int(q * 100)}": quantile_from(bins, q) for q in (0.1, 0.5, 0.9)},
        }
    else:
        out["predictions"] = None
    if fields.get("sreq", 0.0) > 0:
        n = fields.get("sh_n", 0.0)
        out["shadow"] = {
            "requests": int(fields["sreq"]),
            "errors": int(fields.get("serr", 0)),
            "rows_compared": int(n),
            "agreement": fields.get("sh_agree", 0.0) / n if n else None,
            "mean_abs_diff": fields.get("sh_absdiff", 0.0) / n if n and "sh_absdiff" in fields else None,
        }
    return out


def indexed_versions(client: redis.Redis, minutes: int = 60) -> list[tuple[str, str, int]]:
    """(tenant, model, version) of every version that served within `minutes`, for /metrics; prunes the rest."""
    now = int(time.time() // 60)
    client.zremrangebyscore(keys.LIVE_INDEX, "-inf", now - minutes)
    out = []
    members: Any = client.zrange(keys.LIVE_INDEX, 0, -1)
    for item in members:
        tenant, model, version = (item.decode() if isinstance(item, bytes) else str(item)).rsplit("/", 2)
        out.append((tenant, model, int(version)))
    return out
