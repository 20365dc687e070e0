"""W10, `python -m bench.byom [--quick]`: an uploaded tiny Transformer text classifier (tests/onnx_models.py)
served by mlqueue (batched, bucketed padding) against an in-process server running onnxruntime per request
(bench/baselines/onnx_text.py), 32 connections, one text per request, the same run. Prints one table and writes
bench/results/w10-<timestamp>.json. Target (BENCHMARK.md): mlqueue ≥ 1.5× the in-process server's req/s.
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

from bench.__main__ import measure, redis_proc, wait_ready
from bench.stack import ROOT, Stack
from bench.wrk import require_wrk
from training.predictors import load_predictor

RESULTS = ROOT / "bench" / "results"
# One review of ~25 words per request: a few buckets' worth of tokens, under the model's 32.
TEXT = "the delivery was fast and the packaging careful, but the screen flickers and support never replied to me"


def build_model(folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import onnx_models  # tests/onnx_models.py: built offline, nothing downloaded

    onnx_models.text_classifier(folder)


def upload(url: str, folder: Path) -> None:
    files = {
        "model": ("model.onnx", (folder / "model.onnx").read_bytes()),
        "tokenizer": ("tokenizer.json", (folder / "tokenizer.json").read_bytes()),
    }
    response = httpx.post(
        f"{url}/v1/models/reviews/versions",
        files=files,
        data={"metadata": (folder / "metadata.json").read_text()},
        timeout=300,
    )
    response.raise_for_status()


def export_wide(home: Path, row: list[float], path: Path) -> list[Any]:
    """mlp-wide (trained through the service by `make bench`) exported by mlqueue's own ONNX export: raw columns
    in, probabilities out. Returns its classes."""
    from training.export import export_onnx
    from training.registry import ModelRegistry

    predictor = load_predictor(ModelRegistry(home / "models"), "default", "mlp-wide", device="cpu")
    width = predictor.preprocess([row]).shape[1]
    export_onnx(
        predictor.preprocessor,
        predictor.model,
        predictor.features,
        predictor.feature_dtypes,
        predictor.task,
        width,
        path,
    )
    return list(predictor.classes or [])


def run(
    args: argparse.Namespace, stack: Stack, workdir: Path, w1b: tuple[list[float], float] | None = None
) -> dict[str, Any]:
    """W10; with `w1b` (mlp-wide's sample row and mlqueue's W1b req/s from the same run), also W1b served by
    mlp-wide exported to ONNX and uploaded (target: ≥ 0.9× the trained version)."""
    folder = workdir / "reviews"
    build_model(folder)
    body = {"inputs": [{"review": TEXT}]}
    out: dict[str, Any] = {}
    api, url = stack.api("api")
    infer = stack.celery("inference", "worker.app", "inference")
    client = httpx.Client(base_url=url)
    wait_ready(client, "inference")
    upload(url, folder)
    r = redis.Redis.from_url(stack.env["MLQ_REDIS_URL"], decode_responses=True)
    print("W10 mlqueue ...", flush=True)
    procs = {"api": api, "worker": infer, "redis": redis_proc(stack)}
    out["mlqueue"] = measure(url + "/v1/models/reviews/predict", body, args, workdir, procs, r)
    if w1b is not None:
        row, trained_rps = w1b
        classes = export_wide(Path(stack.env["MLQ_HOME"]), row, workdir / "mlp-wide.onnx")
        response = httpx.post(
            f"{url}/v1/models/mlp-wide-onnx/versions",
            files={"model": ("model.onnx", (workdir / "mlp-wide.onnx").read_bytes())},
            data={"metadata": json.dumps({"labels": classes})},
            timeout=300,
        )
        response.raise_for_status()
        print("W1b mlqueue, mlp-wide as an uploaded ONNX version ...", flush=True)
        onnx_path = url + "/v1/models/mlp-wide-onnx/predict"
        out["w1b_onnx"] = measure(onnx_path, {"inputs": [row]}, args, workdir, procs, r)
        out["w1b_onnx"]["ratio_vs_trained"] = round(out["w1b_onnx"]["rps"] / trained_rps, 2) if trained_rps else None
    client.close()
    stack.stop(api)
    stack.stop(infer)
    base, base_url = stack.gunicorn(
        "onnx-inprocess", "bench.baselines.onnx_text:app", extra_env={"BENCH_TEXT_MODEL": str(folder)}
    )
    print("W10 in-process onnxruntime ...", flush=True)
    out["inprocess_onnxruntime"] = measure(base_url + "/v1/models/reviews/predict", body, args, workdir, {"api": base})
    stack.stop(base)
    baseline = out["inprocess_onnxruntime"]["rps"]
    out["ratio_vs_inprocess"] = round(out["mlqueue"]["rps"] / baseline, 2) if baseline else None
    return out


def table(out: dict[str, Any]) -> str:
    lines = ["W10 tiny text classifier, 32 connections, one text per request", ""]
    lines.append(f"{'system':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'mean batch':>12}")
    for name in ("mlqueue", "inprocess_onnxruntime"):
        r = out[name]
        lines.append(
            f"{name:<24}{r['rps']:>9.1f}{r['p50_ms'] or 0:>9.1f}{r['p99_ms'] or 0:>9.1f}{r['non_2xx']:>9}"
            f"{str(r.get('mean_batch', '-')):>12}"
        )
    lines.append(f"\nmlqueue / in-process: {out['ratio_vs_inprocess']}x (target >= 1.5x)")
    if "w1b_onnx" in out:
        r = out["w1b_onnx"]
        lines.append(
            f"W1b, mlp-wide uploaded as ONNX: {r['rps']:.1f} req/s, p99 {r['p99_ms'] or 0:.1f} ms, mean batch "
            f"{r.get('mean_batch')}: {r['ratio_vs_trained']}x the trained version's (target >= 0.9x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.byom", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 s runs, 1 s warm-up")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 5.0, 1.0
    require_wrk()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(os.environ.get("BENCH_WORKDIR", f"/tmp/mlq-bench-w10-{stamp}"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        stack.env = {
            "MLQ_REDIS_URL": stack.redis(),
            "MLQ_HOME": str(workdir / "home"),
            "MLQ_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT),
        }
        out = run(args, stack, workdir)
    finally:
        stack.close()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"w10-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "W10": out}, indent=1))
    print()
    print(table(out))
    print(f"\nraw results: {path}; logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
