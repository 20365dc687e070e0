"""W8, many models: `python -m bench.w8 [--duration 15] [--versions 20]`.

N versions of mlp-wide (trained through the service on the same small synthetic data, seeds 0..N-1) whose
footprints total 3x MLQ_MODEL_MEMORY_MB; 32 connections, each request's version drawn Zipf(s=1.1) over them
(version 1 the most popular); one API process, one inference worker. Against W1b on one model in the same run,
with the same Python load generator (bench/loadgen.py). Reports throughput, errors, the cache's hit rate, loads,
evictions and the cold-load p95 (from the workers' load histogram in Redis: the bucket holding the 95th load,
interpolated linearly within it). Prints one table; raw numbers in bench/results/w8-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import loadgen, models
from bench.stack import ROOT, Stack
from store import residency
from store.inference_queue import stats

RESULTS = ROOT / "bench" / "results"
NAME = "mlp-wide"


def zipf_weights(n: int, s: float) -> list[float]:
    raw = [1 / (k**s) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def train_versions(client: httpx.Client, workdir: Path, count: int, device: str = "cpu") -> list[float]:
    """`count` versions of mlp-wide through the service (one dataset, seeds 0..count-1); a sample row."""
    features, hidden, classes, _, _ = models.MODELS[NAME]
    frame = models.dataset(features, classes, 400)
    csv = workdir / "w8.csv"
    frame.to_csv(csv, index=False)
    dataset_id = models.upload(client, csv, "w8")
    jobs = []
    for seed in range(count):
        body = {
            "model": NAME,
            "dataset": dataset_id,
            "target": "y",
            "algorithm": "mlp",
            "device": device,
            "params": {"hidden_layers": hidden, "epochs": 1, "batch_size": 128, "seed": seed},
        }
        response = client.post("/v1/jobs/train", json=body, timeout=60)
        response.raise_for_status()
        jobs.append(response.json())
    for job in jobs:
        models.wait_job(client, job, timeout=900)
    return [float(v) for v in frame.drop(columns="y").iloc[0]]


def footprint_mb(home: Path) -> float:
    """One version's footprint as a CPU worker measures it."""
    from training.registry import ModelRegistry
    from worker.model_cache import ModelCache

    cache = ModelCache(ModelRegistry(home / "models"), device="cpu")
    cache.get("default", NAME, 1)
    return sum(cache.footprints().values()) / 2**20


def cold_load_p95(before: dict[str, float], after: dict[str, float]) -> float | None:
    """The 95th percentile of the loads between two reads of the counters, from the histogram's buckets."""
    bounds = [*residency.LOAD_SECONDS_BUCKETS, math.inf]
    fields = [f"load_s:{b!r}" for b in residency.LOAD_SECONDS_BUCKETS] + ["load_s:inf"]
    counts = [after.get(f, 0.0) - before.get(f, 0.0) for f in fields]
    total = sum(counts)
    if not total:
        return None
    target, running, lower = 0.95 * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if running + count >= target and count:
            upper = bound if bound != math.inf else lower * 2
            return round(lower + (upper - lower) * (target - running) / count, 3)
        running += count
        lower = bound
    return None


def measure(
    url: str, bodies: loadgen.Body, seconds: float, warmup: float, client: redis.Redis, connections: int
) -> dict[str, Any]:
    loadgen.run(url, bodies, warmup, connections)
    cache_before, batch_before = residency.counters(client), stats(client)
    result = loadgen.run(url, bodies, seconds, connections)
    time.sleep(1.5)  # the workers report their cache counters every second
    cache_after, batch_after = residency.counters(client), stats(client)
    delta = {k: cache_after.get(k, 0.0) - cache_before.get(k, 0.0) for k in residency.COUNTER_NAMES}
    asked = delta["hits"] + delta["misses"]
    passes = batch_after["forward_passes"] - batch_before["forward_passes"]
    result["cache"] = delta
    result["hit_rate"] = round(delta["hits"] / asked, 3) if asked else None
    result["cold_load_p95_s"] = cold_load_p95(cache_before, cache_after)
    result["mean_batch"] = round((batch_after["rows"] - batch_before["rows"]) / passes, 2) if passes else None
    return result


def run(args: argparse.Namespace, stack: Stack, workdir: Path) -> dict[str, Any]:
    api, url = stack.api("api")
    train = stack.celery("train", "worker.app", "train")
    client = httpx.Client(base_url=url)
    from bench.__main__ import wait_ready

    wait_ready(client, "train")
    print(f"W8: training {args.versions} versions of {NAME} through the service ...", flush=True)
    row = train_versions(client, workdir, args.versions)
    stack.stop(train)
    size = footprint_mb(Path(stack.env["MLQ_HOME"]))
    budget = max(1, round(size * args.versions / 3))
    print(f"  one version holds {size:.1f} MB; MLQ_MODEL_MEMORY_MB={budget} (3x less than all)", flush=True)
    stack.celery("inference", "worker.app", "inference", extra_env={"MLQ_MODEL_MEMORY_MB": str(budget)})
    wait_ready(client, "inference")
    r = redis.Redis.from_url(stack.env["MLQ_REDIS_URL"], decode_responses=True)
    path = f"/v1/models/{NAME}/predict"
    out: dict[str, Any] = {"footprint_mb": round(size, 2), "budget_mb": budget, "versions": args.versions}
    print("W1b reference: one version, 32 connections ...", flush=True)
    out["W1b_one_model"] = measure(url, lambda: (path, {"version": 1, "inputs": [row]}), args.duration, 2, r, 32)
    weights = zipf_weights(args.versions, args.zipf)
    rng = random.Random(0)
    versions = list(range(1, args.versions + 1))

    def zipf_body() -> tuple[str, dict[str, Any]]:
        return path, {"version": rng.choices(versions, weights)[0], "inputs": [row]}

    print(f"W8: Zipf(s={args.zipf}) over {args.versions} versions, 32 connections ...", flush=True)
    out["W8"] = measure(url, zipf_body, args.duration, 2, r, 32)
    client.close()
    stack.stop(api)
    return out


def table(out: dict[str, Any]) -> str:
    rows = [
        "| workload | req/s | p50 ms | p99 ms | failed | hit rate | loads | evictions | cold-load p95 s | mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, key in (("W1b, one version", "W1b_one_model"), (f"W8, {out['versions']} versions Zipf", "W8")):
        r = out[key]
        failed = r["non_200"] + len(r["connection_errors"])
        rows.append(
            f"| {label} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {failed} | {r['hit_rate']} | "
            f"{r['cache']['loads']:.0f} | {r['cache']['evictions']:.0f} | {r['cold_load_p95_s']} | {r['mean_batch']} |"
        )
    ratio = out["W8"]["rps"] / out["W1b_one_model"]["rps"] if out["W1b_one_model"]["rps"] else 0.0
    rows.append("")
    rows.append(
        f"W8 / W1b throughput: {ratio:.2f}x (target >= 0.5x); one version {out['footprint_mb']} MB, "
        f"budget {out['budget_mb']} MB for {out['versions']} versions"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.w8", description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run (default 15)")
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--zipf", type=float, default=1.1, help="the Zipf exponent s (default 1.1)")
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(os.environ.get("BENCH_WORKDIR", f"/tmp/mlq-w8-{stamp}"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        stack.env = {
            "MLQ_REDIS_URL": stack.redis(),
            "MLQ_HOME": str(workdir / "home"),
            "MLQ_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MLQ_HEARTBEAT_S": "1",
            "PYTHONPATH": str(ROOT),
        }
        out = run(args, stack, workdir)
    finally:
        stack.close()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"w8-{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print()
    print(table(out))
    print(f"\nraw results: {path}; logs: {workdir}")
    failed = out["W8"]["non_200"] + len(out["W8"]["connection_errors"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
