"""`python -m bench [--quick]`: train through the service, run W1, W1b, W2, W3, W4 and both baselines, print
ONE table and write the raw numbers to bench/results/<timestamp>.json. The method is in docs/benchmarks.md.

The baselines are bare (bench/baselines/bare.py): the ratios and targets are against them. With
--predictor-baselines the same two servers run again through training.predictor.Predictor, as extra rows."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import models, oip, preprocessing, traffic, wrk
from bench.stack import ROOT, Proc, Stack, cpu_seconds, holds_torch, rss_mb
from bench.table import table
from store.inference_queue import stats

RESULTS = ROOT / "bench" / "results"


def measure(
    url: str,
    body: dict[str, Any] | bytes,
    args: argparse.Namespace,
    workdir: Path,
    procs: dict[str, Proc],
    client: redis.Redis | None = None,
    connections: int = 32,
    rate: float | None = None,
    latency_ms: float = 0.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Warm up, then one measured wrk run with CPU per process (and batch sizes when `client` is mlqueue's).

    `rate`: paced load at about that many req/s (W4's CPU per request below saturation), else closed-loop.
    `body`: JSON, or raw bytes sent with `headers` (W7's binary tensors).
    """
    wrk.run(url, body, args.warmup, workdir, connections, rate, latency_ms, headers)
    pids = {name: proc.pids for name, proc in procs.items()}
    cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
    batches_before = stats(client) if client else None
    started = time.monotonic()
    result = wrk.run(url, body, args.duration, workdir, connections, rate, latency_ms, headers)
    wall = time.monotonic() - started
    used = {name: cpu_seconds(p) - cpu_before[name] for name, p in pids.items()}
    result["cpu_pct"] = {name: round(100 * seconds / wall, 1) for name, seconds in used.items()}
    # CPU per request, in ms: what sizes a deployment (one process can give at most ~1000 ms per second).
    result["cpu_ms_per_request"] = {
        name: round(1000 * seconds / result["requests"], 3) if result["requests"] else None
        for name, seconds in used.items()
    }
    if client and batches_before:
        after = stats(client)
        delta = {k: after[k] - batches_before.get(k, 0) for k in after}
        result["batches"] = delta
        result["mean_batch"] = round(delta["rows"] / delta["forward_passes"], 2) if delta["forward_passes"] else None
    if result["rps"]:  # keep wrk's own output only when nothing was measured
        result.pop("raw")
    return result


def body_for(name: str, row: list[float]) -> tuple[str, dict[str, Any]]:
    return f"/v1/models/{name}/predict", {"inputs": [row]}


def run_mlqueue(args: argparse.Namespace, stack: Stack, workdir: Path, out: dict[str, Any]) -> dict[str, Any]:
    api, url = stack.api("api", worker_class=args.api_worker_class)
    train = stack.celery("train", "worker.app", "train")
    client = httpx.Client(base_url=url)
    wait_ready(client, "train")
    print("training mlp32 and mlp-wide through the service ...", flush=True)
    rows = models.train_models(client, workdir)
    if not args.only_w7:
        print("W3: training through the queue vs in-process ...", flush=True)
        out["W3"] = models.w3_training(client, workdir, args.w3_rows, Path(stack.env["MLQ_HOME"]))
        print(f"  {out['W3']}", flush=True)
    stack.stop(train)
    if not args.only_w7:
        print("W2: forward passes in-process ...", flush=True)
        out["W2"] = models.w2_compute(Path(stack.env["MLQ_HOME"]))
        print("P: compiled preprocessing vs the ColumnTransformer ...", flush=True)
        out["P"] = preprocessing.measure(Path(stack.env["MLQ_HOME"]), list(models.MODELS))
    infer = stack.celery("inference", "worker.app", "inference")
    wait_ready(client, "inference")
    r = redis.Redis.from_url(stack.env["MLQ_REDIS_URL"], decode_responses=True)
    for workload, name in (("W1", "mlp32"), ("W1b", "mlp-wide"))[1 if args.only_w7 else 0 :]:
        path, body = body_for(name, rows[name])
        print(f"{workload} mlqueue ...", flush=True)
        out.setdefault(workload, {})["mlqueue"] = measure(
            url + path, body, args, workdir, {"api": api, "worker": infer, "redis": redis_proc(stack)}, r
        )
    if not args.skip_w7:
        procs = {"api": api, "worker": infer, "redis": redis_proc(stack)}

        def one(to: str, sent: dict[str, Any] | bytes, headers: dict[str, str] | None) -> dict[str, Any]:
            return measure(to, sent, args, workdir, procs, r, headers=headers)

        out["W7"] = oip.w7(url, rows["mlp-wide"], one)
        out["WP"] = oip.policies(url, rows["mlp-wide"], args, one)
    out["idle"] = idle(api, infer)
    if args.w4_rates:
        path, body = body_for("mlp-wide", rows["mlp-wide"])
        procs = {"api": api, "worker": infer, "redis": redis_proc(stack)}
        out["W4_cpu"] = cpu_per_request(url + path, body, args, workdir, procs, r, out["W1b"]["mlqueue"]["rps"])
    if not args.skip_w4:
        path, body = body_for("mlp-wide", rows["mlp-wide"])
        second = stack.celery("inference2", "worker.app", "inference")
        wait_ready(client, "inference", 2)
        print("W4 mlqueue, 1 API process, 2 inference workers ...", flush=True)
        procs = {"api": api, "worker": infer, "worker2": second, "redis": redis_proc(stack)}
        out.setdefault("W4", {})["api1_workers2"] = measure(url + path, body, args, workdir, procs, r)
        client.close()
        stack.stop(api)
        api, url = stack.api("api2", workers=2, worker_class=args.api_worker_class)
        print("W4 mlqueue, 2 API processes, 2 inference workers ...", flush=True)
        procs["api"] = api
        out["W4"]["api2_workers2"] = measure(url + path, body, args, workdir, procs, r)
        out["W4"]["api1_workers1"] = out["W1b"]["mlqueue"]
        stack.stop(second)
    client.close()
    stack.stop(api)
    stack.stop(infer)
    return rows


def cpu_per_request(
    url: str,
    body: dict[str, Any],
    args: argparse.Namespace,
    workdir: Path,
    procs: dict[str, Proc],
    client: redis.Redis,
    closed_loop_rps: float,
) -> dict[str, Any]:
    """W4 on a machine too small to show scaling: each process's CPU per request at paced rates below saturation
    (fractions of the closed-loop rate), and the req/s one process of each kind could sustain on a core of its
    own (1000 ms / its CPU ms per request). Batches are smaller at low rates, so the worker's figure is a floor."""
    out: dict[str, Any] = {}
    connections = 16  # wrk keeps the pace of few connections better than of many (measured: 64 lag behind)
    for fraction in (float(f) for f in args.w4_rates.split(",")):
        rate = max(10.0, round(fraction * closed_loop_rps))
        print(f"W4 CPU per request, mlp-wide paced at ~{rate:.0f} req/s ...", flush=True)
        # A short run at the nominal delay measures the latency at about this rate; the measured run's delay
        # leaves it out, so its rate lands near `rate`. Capped at half the delay: a probe slowed by a noisy
        # neighbour must not double the rate.
        probe = wrk.run(url, body, max(2.0, args.warmup), workdir, connections, rate)
        latency = min(probe["p50_ms"] or 0.0, wrk.pacing_interval(rate, connections) / 2)
        result = measure(url, body, args, workdir, procs, client, connections, rate, latency)
        ms = result["cpu_ms_per_request"]
        result["offered_rps"] = rate
        result["sustainable_rps"] = {
            name: round(1000 / ms[name]) if ms.get(name) else None for name in ("api", "worker", "redis")
        }
        out[f"{fraction:g}"] = result
    return out


def redis_proc(stack: Stack) -> Proc:
    return next(p for p in stack.procs if p.name == "redis")


def wait_ready(client: httpx.Client, queue: str, workers: int = 1, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = client.get("/readyz").json()
        if ready["queues"][queue]["workers"] >= workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {queue} worker became ready: {ready}")
        time.sleep(0.2)


def idle(api: Proc, worker: Proc, seconds: float = 5.0) -> dict[str, Any]:
    """CPU of the idle worker and API over `seconds`; the API's RSS and whether it mapped libtorch."""
    time.sleep(1.0)
    before = cpu_seconds(worker.pids), cpu_seconds(api.pids)
    time.sleep(seconds)
    after = cpu_seconds(worker.pids), cpu_seconds(api.pids)
    api_pid = api.pids[-1]  # the gunicorn worker (the master's child)
    return {
        "worker_cpu_pct": round(100 * (after[0] - before[0]) / seconds, 2),
        "api_cpu_pct": round(100 * (after[1] - before[1]) / seconds, 2),
        "api_rss_mb": round(rss_mb(api_pid), 1),
        "api_holds_torch": holds_torch(api_pid),
    }


def run_baselines(
    args: argparse.Namespace,
    stack: Stack,
    workdir: Path,
    rows: dict[str, list[float]],
    out: dict[str, Any],
    variant: str = "bare",
) -> None:
    """Both baselines, bare (the targets' reference) or through the Predictor (rows labelled *_predictor)."""
    suffix = "" if variant == "bare" else f"_{variant}"
    env = {"BENCH_REDIS_URL": stack.env["MLQ_REDIS_URL"].rsplit("/", 1)[0] + "/1", "BENCH_BASELINE": variant}
    worker = stack.celery(
        "naive-worker" + suffix, "bench.baselines.naive_celery:celery_app", "naive", pool="solo", extra_env=env
    )
    api, url = stack.gunicorn("naive-api" + suffix, "bench.baselines.naive_celery:app", extra_env=env)
    ping = {"inputs": [rows["mlp32"]]}
    deadline = time.monotonic() + 120
    while httpx.post(url + "/v1/models/mlp32/predict", json=ping, timeout=30).status_code != 200:
        if time.monotonic() > deadline or worker.popen.poll() is not None:
            raise RuntimeError(f"the naive Celery baseline does not answer:\n{worker.tail()}")
        time.sleep(0.5)
    for workload, name in (("W1", "mlp32"), ("W1b", "mlp-wide")):
        print(f"{workload} naive Celery ({variant}) ...", flush=True)
        path, body = body_for(name, rows[name])
        out[workload]["naive_celery" + suffix] = measure(
            url + path, body, args, workdir, {"api": api, "worker": worker, "redis": redis_proc(stack)}
        )
    stack.stop(api)
    stack.stop(worker)
    api, url = stack.gunicorn("inprocess-api" + suffix, "bench.baselines.inprocess_flask:app", extra_env=env)
    for workload, name in (("W1", "mlp32"), ("W1b", "mlp-wide")):
        print(f"{workload} in-process Flask ({variant}) ...", flush=True)
        path, body = body_for(name, rows[name])
        out[workload]["inprocess_flask" + suffix] = measure(url + path, body, args, workdir, {"api": api})
    stack.stop(api)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="~5 s runs, 1 s warm-up, a smaller W3")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per run (default 3)")
    parser.add_argument("--w3-rows", type=int, default=100_000)
    parser.add_argument("--skip-w4", action="store_true")
    parser.add_argument("--skip-w7", action="store_true", help="skip W7 (/v2 vs /v1) and WP (batching policies)")
    parser.add_argument("--only-w7", action="store_true", help="W1b, W7 and WP only: no W3, W4, baselines")
    parser.add_argument(
        "--api-worker-class",
        choices=["gevent", "gthread"],
        default="gevent",
        help="the serving model of mlqueue's API (gthread: the one before issue 8, to compare)",
    )
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-w9", action="store_true", help="skip W9 (traffic control: drift counting on/off)")
    traffic.add_arguments(parser)
    parser.add_argument("--skip-w10", action="store_true", help="skip W10 (an uploaded ONNX text classifier)")
    parser.add_argument(
        "--predictor-baselines",
        action="store_true",
        help="also run both baselines through training.predictor.Predictor (extra rows)",
    )
    parser.add_argument(
        "--w4-rates",
        default="0.2,0.4",
        help="W4 CPU per request: paced rates as fractions of W1b's closed-loop req/s ('' skips)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.w3_rows = 5.0, 1.0, min(args.w3_rows, 20_000)
    if args.only_w7:
        args.skip_w4, args.w4_rates, args.skip_baselines, args.skip_w7 = True, "", True, False
    wrk.require_wrk()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(os.environ.get("BENCH_WORKDIR", f"/tmp/mlq-bench-{stamp}"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir)
    # SIGTERM (e.g. from `timeout`) must still stop every process the harness started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out: dict[str, Any] = {"args": vars(args), "machine": machine()}
    try:
        url = stack.redis()
        stack.env = {
            "MLQ_REDIS_URL": url,
            "MLQ_HOME": str(workdir / "home"),
            "MLQ_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MLQ_MAX_UPLOAD_MB": "200",
            "MLQ_HEARTBEAT_S": "1",
            "MLQ_PRELOAD": "mlp32:1,mlp-wide:1",
            "PYTHONPATH": str(ROOT),
        }
        rows = run_mlqueue(args, stack, workdir, out)
        if not args.skip_w9:
            out["W9"] = traffic.run_w9(args, stack, workdir, rows["mlp32"], redis_proc(stack), measure)
        if not args.skip_baselines:
            run_baselines(args, stack, workdir, rows, out)
            if args.predictor_baselines:
                run_baselines(args, stack, workdir, rows, out, "predictor")
        if not args.skip_w10:
            from bench import byom  # W10 (docs/benchmarks.md): its own processes, on this stack's Redis

            out["W10"] = byom.run(args, stack, workdir, (rows["mlp-wide"], out["W1b"]["mlqueue"]["rps"]))
    finally:
        stack.close()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print()
    if not args.only_w7:
        print(table(out))
    if "W10" in out:
        from bench import byom

        print("\n" + byom.table(out["W10"]))
    print()
    print(oip.tables(out))
    print(f"\nraw results: {path}; logs: {workdir}")
    return 0


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main())
