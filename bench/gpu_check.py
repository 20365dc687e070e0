"""`make gpu-check` (`python -m bench.gpu_check [--device cpu]`): mlqueue on every visible GPU, in one command.

The launcher starts one worker per GPU (`mlq worker --devices auto`), and the check then, through the REST API:
trains an mlp on cuda, predicts, serves three versions round robin under a model memory budget that holds two
(the footprints measured as CUDA allocations), drives 32 connections at one version (the batches formed), and
runs the same load against the bare in-process server on cuda (G1 in docs/benchmarks.md). It prints progress,
then ONE table, and exits 1 if any check failed, 2 if it could not run (no GPU, no CUDA torch, no Redis).
`--device cpu` runs the same flow on the CPU (the dry run CI can do). Bounded: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import loadgen
from bench.stack import BIN, ROOT, Stack, children
from bench.w8 import train_versions
from store import residency
from store.inference_queue import stats
from store.liveness import WorkerLiveness
from worker.launcher import visible_gpus

BUDGET_MB = 40  # mlp-wide holds ~18 MB (4.7 M float32 parameters): two versions fit, three do not
NAME = "mlp-wide"


class Check:
    """The table's rows: each check with its verdict (True, False, or None for figures without one)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, bool | None, str]] = []

    def add(self, name: str, ok: bool | None, detail: str) -> bool:
        self.rows.append((name, ok, detail))
        mark = {True: "ok", False: "FAILED", None: "info"}[ok]
        print(f"  [{mark}] {name}: {detail}", flush=True)
        return bool(ok) or ok is None

    def table(self) -> str:
        lines = ["| check | result | detail |", "|---|---|---|"]
        lines += [
            f"| {n} | {dict([(True, 'ok'), (False, 'FAILED'), (None, 'info')])[ok]} | {d} |" for n, ok, d in self.rows
        ]
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        return any(ok is False for _, ok, _ in self.rows)


def torch_cuda() -> dict[str, Any]:
    """What the installed torch says about CUDA, asked in a child process (this one never initialises CUDA)."""
    code = (
        "import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
        "'available': torch.cuda.is_available(), 'count': torch.cuda.device_count()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return dict(json.loads(out.stdout.strip().splitlines()[-1])) if out.returncode == 0 else {"error": out.stderr}


def needs_cuda_torch() -> int:
    """For the Makefile: 1 when a GPU is visible but the installed torch is a CPU build (install the PyPI one)."""
    if not visible_gpus():
        return 0
    info = torch_cuda()
    return 1 if not info.get("cuda") else 0


def gpu_processes() -> dict[str, set[int]]:
    """nvidia-smi's compute processes: GPU index -> pids."""
    uuids = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
    ).stdout
    index = {u.strip(): i.strip() for i, u in (line.split(",") for line in uuids.splitlines() if "," in line)}
    apps = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    out: dict[str, set[int]] = {}
    for line in apps.splitlines():
        if "," in line:
            pid, uuid = (p.strip() for p in line.split(",", 1))
            out.setdefault(index.get(uuid, uuid), set()).add(int(pid))
    return out


def wait_for(what: str, probe: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.3)


def run(args: argparse.Namespace, stack: Stack, workdir: Path, check: Check) -> None:
    cuda = args.device == "cuda"
    gpus = visible_gpus() if cuda else []
    print(f"starting the API and the workers ({'every visible GPU' if cuda else 'cpu'}) ...", flush=True)
    api, url = stack.api("api")
    env = {"MLQ_MODEL_MEMORY_MB": str(BUDGET_MB)}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run must not touch a GPU even where there is one
    argv = [str(BIN / "mlq"), "worker", "--devices", "auto" if cuda else "cpu", "--queues", "train,inference"]
    launcher = stack.spawn("workers", argv, env)
    expected = len(gpus) or 1
    client = httpx.Client(base_url=url, timeout=60)
    r = redis.Redis.from_url(stack.env["MLQ_REDIS_URL"], decode_responses=True)
    ready = wait_for(
        "workers ready",
        lambda: (w := WorkerLiveness(r).workers()) and len(w) >= expected and w,
        240,
    )
    devices = sorted(w["device"] for w in ready)
    want = sorted(f"cuda:{g}" for g in gpus) if cuda else ["cpu"]
    check.add("one worker per device", devices == want, f"{len(ready)} worker processes on {', '.join(devices)}")

    print(f"training 3 versions of {NAME} on {args.device} through the API ...", flush=True)
    started = time.monotonic()
    row = train_versions(client, workdir, 3, device=args.device)
    check.add(
        f"train {NAME} on {args.device} (3 versions)", True, f"{time.monotonic() - started:.1f} s through the API"
    )

    path = f"/v1/models/{NAME}/predict"
    answer = client.post(path, json={"version": 1, "inputs": [row]}, headers={"Prefer": "wait=60"}).json()
    ok = answer.get("status") == "succeeded" and answer["result"]["version"] == 1
    check.add("predict through the API", ok, f"status {answer.get('status')}, label {_label(answer)}")

    print(f"round robin over 3 versions under MLQ_MODEL_MEMORY_MB={BUDGET_MB} ...", flush=True)
    before = residency.counters(r)
    failures = 0
    for i in range(9):
        reply = client.post(path, json={"version": 1 + i % 3, "inputs": [row]}, headers={"Prefer": "wait=60"})
        failures += reply.status_code != 200 or reply.json().get("status") != "succeeded"
    time.sleep(2.0)  # the workers report their cache counters every second
    after, caches = residency.counters(r), residency.resident(r)
    evictions = after["evictions"] - before["evictions"]
    worst = max((c["bytes"] for c in caches.values()), default=0)
    ok = failures == 0 and worst <= BUDGET_MB * 2**20 and (evictions > 0 or expected > 1)
    held = ", ".join(
        f"{c['device']}: {c['bytes'] / 2**20:.1f} MB ({len(c['models'])} versions)" for c in caches.values()
    )
    check.add(
        f"memory budget {BUDGET_MB} MB (holds 2 of 3)",
        ok,
        f"{failures} failed of 9 round robin, {evictions:.0f} evictions, {after['loads'] - before['loads']:.0f} "
        f"loads; held {held}",
    )

    workers = set(children(launcher.popen.pid))
    if cuda:
        listed = gpu_processes()
        ours = {gpu: sorted(p & workers) for gpu, p in listed.items()}
        if any(ours.values()):
            ok = all(len(ours.get(g, [])) == 1 for g in gpus)
            detail = f"worker pids per GPU: {json.dumps(ours)}"
        else:  # in a container nvidia-smi may list host pids: one process per GPU is then what can be checked
            ok = all(len(listed.get(g, ())) == 1 for g in gpus)
            detail = f"pids per GPU (another PID namespace): {json.dumps({g: sorted(p) for g, p in listed.items()})}"
        check.add("nvidia-smi: one worker process per GPU", ok, detail)

    body = {"version": 1, "inputs": [row]}
    print(f"W1b on mlqueue: 32 connections for {args.duration:.0f} s ...", flush=True)
    loadgen.run(url, lambda: (path, body), 2, 32)
    batches = stats(r)
    mlq = loadgen.run(url, lambda: (path, body), args.duration, 32)
    done = stats(r)
    passes = done["forward_passes"] - batches["forward_passes"]
    mean = (done["rows"] - batches["rows"]) / passes if passes else 0.0
    check.add(
        "batches at 32 connections",
        mlq["non_200"] == 0 and not mlq["connection_errors"] and mean > 1.5,
        f"{mlq['rps']} req/s, p99 {mlq['p99_ms']} ms, mean batch {mean:.1f} rows, {mlq['non_200']} not 200",
    )
    client.close()
    stack.stop(launcher)  # the baseline gets the device (and the cores) to itself, as mlqueue had
    for pid in workers - {launcher.popen.pid}:  # each worker has its own process group: none may outlive this
        with contextlib.suppress(OSError):  # gone already; a pid reused since is no celery worker.app process
            if b"worker.app" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
    base_env = {
        "BENCH_DEVICE": "cuda" if cuda else "cpu",
        "BENCH_MODELS": NAME,
        "CUDA_VISIBLE_DEVICES": gpus[0] if gpus else "",
    }
    print(f"W1b on the bare in-process server on {args.device} ...", flush=True)
    base, base_url = stack.gunicorn("inprocess", "bench.baselines.inprocess_flask:app", extra_env=base_env)
    loadgen.run(base_url, lambda: (path, body), 2, 32)
    bare = loadgen.run(base_url, lambda: (path, body), args.duration, 32)
    stack.stop(base)
    ratio = mlq["rps"] / bare["rps"] if bare["rps"] else 0.0
    check.add(
        f"G1: W1b mlqueue vs in-process server on {args.device}",
        None,
        f"{mlq['rps']} vs {bare['rps']} req/s = {ratio:.2f}x (target >= 3x on a GPU); p99 {mlq['p99_ms']} vs "
        f"{bare['p99_ms']} ms",
    )


def _label(answer: dict[str, Any]) -> Any:
    try:
        return answer["result"]["predictions"][0].get("label")
    except (KeyError, IndexError, TypeError):
        return answer.get("error")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the same flow, no GPU")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each 32-connection run")
    parser.add_argument("--needs-cuda-torch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.needs_cuda_torch:
        return needs_cuda_torch()
    if shutil.which("redis-server") is None:
        print("gpu-check: redis-server is not installed (apt-get install -y redis-server)", file=sys.stderr)
        return 2
    if args.device == "cuda":
        if not visible_gpus():
            print(
                "gpu-check: no GPU is visible (nvidia-smi -L lists none, or CUDA_VISIBLE_DEVICES hides them); "
                "`make gpu-check ARGS=--device=cpu` runs the same flow on the CPU",
                file=sys.stderr,
            )
            return 2
        info = torch_cuda()
        if not info.get("available"):
            print(
                f"gpu-check: a GPU is visible but torch cannot use it: {info}. A CPU build (cuda None): "
                "`.venv/bin/pip install --isolated --force-reinstall --index-url https://pypi.org/simple "
                "torch==2.13.0` "
                "(PyPI's Linux wheel is built for CUDA 13.0); a CUDA build that is not available: the NVIDIA "
                "driver is older than that CUDA needs (nvidia-smi shows the driver's CUDA version)",
                file=sys.stderr,
            )
            return 2
        print(f"torch {info['version']} with CUDA {info['cuda']}, {info['count']} GPU(s) visible", flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(os.environ.get("BENCH_WORKDIR", f"/tmp/mlq-gpu-check-{stamp}"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    check = Check()
    started = time.monotonic()
    try:
        stack.env = {
            "MLQ_REDIS_URL": stack.redis(),
            "MLQ_HOME": str(workdir / "home"),
            "MLQ_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MLQ_HEARTBEAT_S": "1",
            "PYTHONPATH": str(ROOT),
        }
        run(args, stack, workdir, check)
    except Exception as exc:  # noqa: BLE001 - any failure is a row of the table, and the exit status
        check.add("the check ran to its end", False, f"{type(exc).__name__}: {exc}")
    finally:
        stack.close()
    print()
    print(check.table())
    print(f"\n{time.monotonic() - started:.0f} s; logs: {workdir}")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
