"""`python -m bench.optimized [--quick]`: W1b served by mlp-wide's float version and by its int8 version.

Separate from `python -m bench` (it reuses its stack, models and wrk runs, and changes none of them): train
mlp-wide through the service, quantize it and export it to ONNX with optimize jobs, then run W1b against
version 1 (float) and version 2 (int8) with the same inference worker holding both, one after the other, in
one run. The optimize jobs' own comparisons (one thread, in the worker) are kept beside the wrk figures; the ONNX
file is not served (no worker runs onnxruntime), so its latency is the job's in-process measurement only.
"""

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

from bench import models, wrk
from bench.__main__ import RESULTS, machine, measure, redis_proc, wait_ready
from bench.stack import ROOT, Stack

MODEL = "mlp-wide"


def optimize(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/models/{MODEL}/versions/1/optimize", json=body, timeout=60)
    response.raise_for_status()
    return dict(models.wait_job(client, response.json())["result"])


def run(args: argparse.Namespace, stack: Stack, workdir: Path, out: dict[str, Any]) -> None:
    api, url = stack.api("api")
    train = stack.celery("train", "worker.app", "train")
    client = httpx.Client(base_url=url)
    wait_ready(client, "train")
    features, hidden, classes, rows, epochs = models.MODELS[MODEL]
    frame = models.dataset(features, classes, rows)
    params = {"hidden_layers": hidden, "epochs": epochs, "batch_size": 128, "lr": 1e-3, "seed": 0}
    print(f"training {MODEL}, then quantize_dynamic and export onnx jobs ...", flush=True)
    models.train_via_service(client, workdir, MODEL, params, frame)
    out["quantize_dynamic"] = optimize(client, {"method": "quantize_dynamic"})
    out["export_onnx"] = optimize(client, {"method": "export", "format": "onnx"})
    stack.stop(train)
    infer = stack.celery("inference", "worker.app", "inference")
    wait_ready(client, "inference")
    r = redis.Redis.from_url(stack.env["MLQ_REDIS_URL"], decode_responses=True)
    row = [float(v) for v in frame.drop(columns="y").iloc[0]]
    for label, version in (("float", 1), ("int8", out["quantize_dynamic"]["version"])):
        print(f"W1b {MODEL} v{version} ({label}) ...", flush=True)
        body = {"inputs": [row], "version": version}
        out.setdefault("W1b", {})[label] = measure(
            f"{url}/v1/models/{MODEL}/predict",
            body,
            args,
            workdir,
            {"api": api, "worker": infer, "redis": redis_proc(stack)},
            r,
        )
    client.close()
    stack.stop(api)
    stack.stop(infer)


def table(out: dict[str, Any]) -> str:
    lines = [
        "| W1b mlp-wide served by | req/s | p50 ms | p99 ms | errors | mean batch | CPU % per process |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, res in out["W1b"].items():
        cpu = ", ".join(f"{k} {v}" for k, v in res["cpu_pct"].items())
        lines.append(
            f"| {label} | {res['rps']} | {res['p50_ms']} | {res['p99_ms']} | "
            f"{res['non_2xx']} / {res['non_200']} | {res.get('mean_batch')} | {cpu} |"
        )
    lines.append("")
    lines.append(
        "| in the optimize job (1 thread) | bytes | 1 row ms | 64 rows ms | model 1 row ms | "
        "model 64 rows ms | test accuracy |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    q, o = out["quantize_dynamic"]["comparison"], out["export_onnx"]["comparison"]
    for label, side in (
        ("float v1", q["parent"]),
        ("int8 (quantize_dynamic)", q["child"]),
        ("onnxruntime (export, not served)", o["child"]),
    ):
        lat, model = side["latency_ms"], side["model_latency_ms"]
        lines.append(
            f"| {label} | {side['artifact_bytes']} | {lat['1']} | {lat['64']} | {model['1'] or '-'} | "
            f"{model['64'] or '-'} | {side['metrics'].get('accuracy')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.optimized", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="~5 s runs, 1 s warm-up")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 5.0, 1.0
    wrk.require_wrk()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(os.environ.get("BENCH_WORKDIR", f"/tmp/mlq-bench-optimized-{stamp}"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out: dict[str, Any] = {"args": vars(args), "machine": machine()}
    try:
        stack.env = {
            "MLQ_REDIS_URL": stack.redis(),
            "MLQ_HOME": str(workdir / "home"),
            "MLQ_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MLQ_MAX_UPLOAD_MB": "200",
            "MLQ_HEARTBEAT_S": "1",
            "MLQ_PRELOAD": f"{MODEL}:1,{MODEL}:2",
            "PYTHONPATH": str(ROOT),
        }
        run(args, stack, workdir, out)
    finally:
        stack.close()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}-optimized.json"
    path.write_text(json.dumps(out, indent=1))
    print()
    print(table(out))
    print(f"\nraw results: {path}; logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
