"""W9 traffic control: W1 (mlp32, one-row predicts, 32 connections, one API process, one inference worker) with
the serving extras on, against W1 with them off, in one run.

`python -m bench.traffic [--quick] [--variants off,drift] [--rounds 2]` trains mlp32 through the service and runs
only W9; `python -m bench` runs it too after W1/W1b (unless --skip-w9). Each variant is an inference worker
started with its own environment (and, optionally, a step that prepares the alias it is measured on); the
variants take turns, `--rounds` times, so that a noisy neighbour on a shared machine lands on all of them alike.
The table gives each variant's median req/s against "off" and the CPU per request it adds, per process.

A variant is one entry of VARIANTS: "off" (a plain alias, no drift counting), "drift", and "split" (issue 19's W9:
the alias split 90/10 over two versions of mlp32, drift counting on). Live per-version metrics have no switch: they
ride in the pipeline that answers each batch, in every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import models, wrk
from bench.stack import ROOT, Proc, Stack
from training.predictors import load_predictor


@dataclass(frozen=True)
class Variant:
    """How the inference worker of one W9 variant runs, and what it is measured on."""

    worker_env: dict[str, str]
    about: str
    # Called with the API client and the model's name before the variant is measured; returns the version (a
    # number or an alias) the requests name. None: requests name no version (the production alias, else latest).
    prepare: Callable[[httpx.Client, str], str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _second_version(client: httpx.Client, model: str) -> int:
    """A second version of `model` for the split: trained once through the service like the first (seed 1), by
    the train worker run_w9 starts for it."""
    versions = client.get(f"/v1/models/{model}", timeout=30).json()["versions"]
    if len(versions) >= 2:
        return int(versions[1]["version"])
    first = versions[0]
    body = {
        "model": model,
        "dataset": first["dataset"]["id"],
        "target": first["target"],
        "algorithm": "mlp",
        "device": "cpu",
        "params": {**first["params"], "seed": 1},
        "split": {"test": 0.1, "validation": 0.1, "seed": 0},
    }
    response = client.post("/v1/jobs/train", json=body, timeout=60)
    response.raise_for_status()
    return int(models.wait_job(client, response.json())["result"]["version"])


def _alias(client: httpx.Client, model: str, alias: str, body: dict[str, Any]) -> str:
    # The PUT answers once the inference worker has loaded every version it names (no cold request measured).
    response = client.put(f"/v1/models/{model}/aliases/{alias}", json=body, timeout=240)
    response.raise_for_status()
    return alias


def _plain(client: httpx.Client, model: str) -> str:
    return _alias(client, model, "w9-plain", {"version": 1})


def _split(client: httpx.Client, model: str) -> str:
    return _alias(client, model, "w9-split", {"versions": {"1": 90, str(_second_version(client, model)): 10}})


VARIANTS: dict[str, Variant] = {
    "off": Variant({"MLQ_DRIFT_COUNTING": "0"}, "W1 on a plain alias: no drift counting", _plain),
    "drift": Variant(
        {"MLQ_DRIFT_COUNTING": "1"}, "drift counting on (inputs and predictions binned per batch)", _plain
    ),
    "split": Variant(
        {"MLQ_DRIFT_COUNTING": "1"},
        "issue 19's W9: the alias split 90/10 over two versions, drift counting on (live metrics are always on)",
        _split,
    ),
}
BASELINE = "off"
MODEL = "mlp32"


def _ready(client: httpx.Client, path: str, body: dict[str, Any], timeout: float = 180) -> None:
    """Until a predict is answered (200): the new worker has its model loaded and serves."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.post(path, json=body, headers={"Prefer": "wait=10"}, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("no inference worker answered a predict")
        time.sleep(0.2)


Measure = Callable[..., dict[str, Any]]


def run_w9(
    args: argparse.Namespace, stack: Stack, workdir: Path, row: list[float], redis_proc: Proc, measure: Measure
) -> dict[str, Any]:
    """Every variant of args.variants, args.rounds times in turn; raw runs and a summary per variant.
    `measure` is bench/__main__.py's, the one W1 is measured with."""
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown W9 variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    api, url = stack.api("api-w9")
    client = httpx.Client(base_url=url)
    r = redis.Redis.from_url(stack.env["MLQ_REDIS_URL"], decode_responses=True)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    try:
        if "split" in names:  # its second version is trained first, by a train worker of its own (gone after)
            trainer = stack.celery("w9-train", "worker.app", "train")
            try:
                _second_version(client, MODEL)
            finally:
                stack.stop(trainer)
        for turn in range(args.rounds):
            for name in names:
                variant = VARIANTS[name]
                infer = stack.celery(f"w9-{name}-{turn}", "worker.app", "inference", extra_env=variant.worker_env)
                version = variant.prepare(client, MODEL) if variant.prepare else None
                body: dict[str, Any] = {"inputs": [row], **({"version": version} if version else {})}
                path = f"/v1/models/{MODEL}/predict"
                _ready(client, path, body)
                print(f"W9 {name} (round {turn + 1}/{args.rounds}) ...", flush=True)
                procs = {"api": api, "worker": infer, "redis": redis_proc}
                runs[name].append(measure(url + path, body, args, workdir, procs, r))
                stack.stop(infer)
    finally:
        client.close()
        r.close()
        stack.stop(api)
    cost = counting_cost(Path(stack.env["MLQ_HOME"]), stack.env["MLQ_REDIS_URL"])
    return {
        "variants": {n: VARIANTS[n].about for n in names},
        "runs": runs,
        "summary": summarise(runs),
        "counting_cost": cost,
    }


def counting_cost(home: Path, redis_url: str, batch: int = 32, repeats: int = 200) -> dict[str, Any]:
    """In-process, the worst case W1 does not show: a batch of `batch` DISTINCT rows of the training data (W1
    repeats one row, so it touches one bin per feature), binned and written as a worker does. Per batch: the
    binning's CPU, and the wall time of one pipeline with its HINCRBYs (here its own; a worker adds them to the
    pipeline that answers the batch)."""
    import numpy as np

    from training.registry import ModelRegistry
    from worker.drift_tally import DriftTally

    predictor = load_predictor(ModelRegistry(home / "models"), "default", MODEL, 1)
    features, _, classes, _, _ = models.MODELS[MODEL]
    frame = models.dataset(features, classes, 2000).drop(columns="y")
    client = redis.Redis.from_url(redis_url)
    tally = DriftTally(client)
    rng = np.random.default_rng(0)
    batches = [frame.iloc[rng.choice(len(frame), batch, replace=False)].to_numpy().tolist() for _ in range(repeats)]
    scores = [predictor.scores(rows) for rows in batches]
    tally.observe(predictor, batches[0], scores[0])  # compile the binner once, as a worker does per version
    tally.pending = {}
    fields = 0
    bin_cpu = flush_cpu = flush_wall = 0.0
    for rows, score in zip(batches, scores, strict=True):
        started = time.process_time()
        tally.observe(predictor, rows, score)
        bin_cpu += time.process_time() - started
        fields += sum(len(f) for f in tally.pending.values())
        started, wall = time.process_time(), time.perf_counter()
        tally.flush()
        flush_cpu += time.process_time() - started
        flush_wall += time.perf_counter() - wall
    client.close()
    return {
        "rows_per_batch": batch,
        "fields_per_batch": round(fields / repeats, 1),
        "binning_cpu_us_per_batch": round(1e6 * bin_cpu / repeats, 1),
        "flush_cpu_us_per_batch": round(1e6 * flush_cpu / repeats, 1),
        "flush_wall_us_per_batch": round(1e6 * flush_wall / repeats, 1),
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median req/s and p99, mean CPU ms per request per process, each against the baseline variant."""
    out: dict[str, Any] = {}
    for name, results in runs.items():
        cpu: dict[str, list[float]] = {}
        for result in results:
            for proc, ms in (result.get("cpu_ms_per_request") or {}).items():
                if ms is not None:
                    cpu.setdefault(proc, []).append(ms)
        out[name] = {
            "rps": round(statistics.median(r["rps"] for r in results), 1),
            "p99_ms": round(statistics.median((r["p99_ms"] or 0.0) for r in results), 2),
            "errors": sum(r["non_2xx"] + r["non_200"] for r in results),
            "mean_batch": [r.get("mean_batch") for r in results],
            "cpu_ms_per_request": {p: round(statistics.fmean(v), 3) for p, v in cpu.items()},
        }
    base = out.get(BASELINE)
    for summary in out.values():
        if base and base["rps"]:
            summary["rps_vs_off"] = round(summary["rps"] / base["rps"], 3)
            summary["cpu_ms_added"] = {
                p: round(ms - base["cpu_ms_per_request"].get(p, 0.0), 3)
                for p, ms in summary["cpu_ms_per_request"].items()
            }
    return out


def lines(out: dict[str, Any]) -> list[str]:
    """W9's rows for the printed table (empty when W9 did not run)."""
    w9 = out.get("W9")
    if not w9:
        return []
    rows = [
        "",
        "W9 traffic control (W1: mlp32, 32 connections; medians over rounds, variants in turn; target: within 5 %):",
        "",
        "| variant | req/s | vs off | p99 ms | errors | mean batch | CPU ms per request | CPU ms added per request |",
        "|" + "---|" * 8,
    ]
    for name, s in w9["summary"].items():
        added = s.get("cpu_ms_added", {})
        rows.append(
            f"| {name}: {w9['variants'][name]} | {s['rps']:.0f} | {s.get('rps_vs_off', '-')}x | {s['p99_ms']:.1f} | "
            f"{s['errors']} | {s['mean_batch']} | {_per(s['cpu_ms_per_request'])} | {_per(added)} |"
        )
    cost = w9.get("counting_cost")
    if cost:
        rows.append(
            f"\nDrift counting in-process, {cost['rows_per_batch']} distinct rows per batch (W1 repeats one row): "
            f"binning {cost['binning_cpu_us_per_batch']} us CPU, {cost['fields_per_batch']} HINCRBY fields in one "
            f"script call: {cost.get('flush_cpu_us_per_batch')} us of the worker's CPU, "
            f"{cost['flush_wall_us_per_batch']} us wall (Redis included), per batch"
        )
    return rows


def _per(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import measure, wait_ready  # run as `python -m bench.traffic`: not a cycle then

    parser = argparse.ArgumentParser(prog="python -m bench.traffic", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="~5 s runs, 1 s warm-up")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 5.0, 1.0
    wrk.require_wrk()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(os.environ.get("BENCH_WORKDIR", f"/tmp/mlq-bench-w9-{stamp}"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out: dict[str, Any] = {"args": vars(args)}
    try:
        stack.env = {
            "MLQ_REDIS_URL": stack.redis(),
            "MLQ_HOME": str(workdir / "home"),
            "MLQ_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MLQ_MAX_UPLOAD_MB": "200",
            "MLQ_HEARTBEAT_S": "1",
            "MLQ_PRELOAD": f"{MODEL}:1",
            "PYTHONPATH": str(ROOT),
        }
        api, url = stack.api("api-train")
        train = stack.celery("train", "worker.app", "train")
        with httpx.Client(base_url=url) as client:
            wait_ready(client, "train")
            features, hidden, classes, n, epochs = models.MODELS[MODEL]
            params = {"hidden_layers": hidden, "epochs": epochs, "batch_size": 128, "lr": 1e-3, "seed": 0}
            frame = models.dataset(features, classes, n)
            models.train_via_service(client, workdir, MODEL, {**params, "early_stopping_patience": 0}, frame)
        stack.stop(train)
        stack.stop(api)
        row = [float(v) for v in frame.drop(columns="y").iloc[0]]
        redis_proc = next(p for p in stack.procs if p.name == "redis")
        out["W9"] = run_w9(args, stack, workdir, row, redis_proc, measure)
    finally:
        stack.close()
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"w9-{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print("\n".join(lines(out)))
    print(f"\nraw results: {path}; logs: {workdir}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """W9's options, shared with `python -m bench`."""
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"W9 variants to run, the baseline '{BASELINE}' first (known: {', '.join(VARIANTS)})",
    )
    parser.add_argument("--rounds", type=int, default=2, help="W9: times each variant runs, in turn (default 2)")


if __name__ == "__main__":
    sys.exit(main())
