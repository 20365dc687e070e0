"""Start one Celery worker process per device, each pinned with CUDA_VISIBLE_DEVICES before torch loads.

The launcher never imports torch: GPUs are counted with `nvidia-smi -L` (or read from an existing
CUDA_VISIBLE_DEVICES mask), so no CUDA context exists in any process that forks. Inside each worker, Celery's
prefork parent only imports torch; models load in the children after the fork (see worker/tasks.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from store.contract import WORKER_QUEUES
from training.errors import MLQError

log = logging.getLogger(__name__)


class LauncherError(MLQError, ValueError):
    """Raised when the devices, queues or concurrency asked for cannot be started; says what is possible."""

    code = "invalid_worker_plan"


@dataclass(frozen=True)
class WorkerPlan:
    """One worker process to start: its command line, the environment it adds, its node name and device."""

    argv: list[str]
    env: dict[str, str]
    hostname: str
    device: str  # "cpu" or "cuda:<id>" (the id as CUDA_VISIBLE_DEVICES names it)


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPU ids this machine lets us use, without importing torch.

    An existing CUDA_VISIBLE_DEVICES mask is the answer (we never remap on top of a mask); otherwise
    `nvidia-smi -L` lists the GPUs; no nvidia-smi on PATH means no GPU.
    """
    env = os.environ if env is None else env
    mask = env.get("CUDA_VISIBLE_DEVICES")
    if mask is not None:
        ids = []
        for part in (p.strip() for p in mask.split(",")):
            if not part or part.startswith("-"):  # CUDA ignores the mask from the first invalid id on
                break
            ids.append(part)
        return ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("nvidia-smi -L failed (%s); starting CPU workers", exc)
        return []
    return [str(i) for i, _ in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]


def _celery_argv(hostname: str, queues: list[str], concurrency: int, loglevel: str) -> list[str]:
    # One job reserved per process: a second training never waits behind the first on a busy worker.
    # (Predictions do not travel as Celery tasks: the inference stream consumer batches them.)
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "-Q",
        ",".join(queues),
        "-n",
        hostname,
        "-P",
        "prefork",
        "-c",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        loglevel,
        # Gossip and mingle sync revokes and events between nodes; mlqueue cancels through the job
        # record instead, and mingle alone adds seconds to every start.
        "--without-gossip",
        "--without-mingle",
    ]


def _parse_devices(devices: str, gpus: list[str]) -> list[str]:
    """`auto` | `cpu` | `cpu:N` | `0,1` → a list of device names ("cpu" or GPU ids)."""
    spec = devices.strip().lower()
    if spec == "auto":
        return list(gpus) or ["cpu"]
    if spec == "cpu":
        return ["cpu"]
    if spec.startswith("cpu:"):
        count = spec[4:]
        if not count.isdigit() or int(count) < 1:
            raise LauncherError(f"devices {devices!r}: write cpu:N with N >= 1 worker processes, e.g. cpu:2")
        return ["cpu"] * int(count)
    wanted = [part.strip() for part in devices.split(",") if part.strip()]
    if not wanted:
        raise LauncherError("devices is empty; use auto, cpu, cpu:N or GPU ids like 0,1")
    if len(set(wanted)) != len(wanted):
        raise LauncherError(
            f"devices {devices!r} names a GPU twice; start one worker per GPU and raise "
            "--concurrency for more processes on one GPU"
        )
    missing = [gpu for gpu in wanted if gpu not in gpus]
    if missing:
        seen = ", ".join(gpus) if gpus else "none (no nvidia-smi, or CUDA_VISIBLE_DEVICES hides them)"
        raise LauncherError(
            f"GPU {', '.join(missing)} is not visible on this machine; visible GPUs: {seen}. "
            "Use devices=auto, cpu, or ids from `nvidia-smi -L`"
        )
    return wanted


def plan(
    devices: str, queues: list[str], concurrency: int, gpu_count: int | None = None, loglevel: str = "info"
) -> list[WorkerPlan]:
    """The worker processes to start: one per device, CPU ones with CUDA hidden.

    `gpu_count` overrides the GPU discovery (GPUs 0..gpu_count-1), for tests and for callers that know.
    """
    unknown = [q for q in queues if q not in WORKER_QUEUES]
    if not queues or unknown:
        raise LauncherError(
            f"unknown queue(s) {', '.join(unknown) or '(none given)'}; queues are {', '.join(WORKER_QUEUES)}"
        )
    if concurrency < 1:
        raise LauncherError(f"concurrency must be >= 1 processes per device, got {concurrency}")
    gpus = visible_gpus() if gpu_count is None else [str(i) for i in range(gpu_count)]
    plans = []
    cpu_workers = 0
    for index, device in enumerate(_parse_devices(devices, gpus)):
        if device == "cpu":
            # An empty mask makes torch see no GPU at all, whatever the machine has.
            tag = "cpu" if cpu_workers == 0 else f"cpu{cpu_workers}"
            cpu_workers += 1
            env, label = {"CUDA_VISIBLE_DEVICES": ""}, "cpu"
        else:
            tag = f"gpu{device}" if device.isdigit() else f"gpu{index}"  # UUID masks get a position
            env, label = {"CUDA_VISIBLE_DEVICES": device}, f"cuda:{device}"
        # A worker for one queue carries its name, so a train and an inference worker on one machine (mlq dev)
        # are distinct Celery nodes: train-cpu@host, inference-gpu0@host; one for both queues is cpu@host.
        if len(queues) == 1:
            tag = f"{queues[0]}-{tag}"
        hostname = f"{tag}@%h"
        plans.append(WorkerPlan(_celery_argv(hostname, list(queues), concurrency, loglevel), env, hostname, label))
    return plans


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N → 128 + N, like a shell


def run(
    queues: list[str],
    devices: str = "auto",
    concurrency: int = 1,
    loglevel: str = "info",
    env: Mapping[str, str] | None = None,
) -> int:
    """Start the planned workers, forward SIGINT/SIGTERM to them, and return when all have exited.

    If one worker dies on its own, the others are stopped too, so a supervisor (docker, systemd) restarts the
    whole set instead of running on with a device silently idle. Returns the first non-zero exit code, else 0.
    """
    plans = plan(devices, queues, concurrency, loglevel=loglevel)
    base = dict(os.environ if env is None else env)
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False
    codes: dict[int, int] = {}

    def stop_all(signum: int) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all(signum)  # a second Ctrl+C is forwarded again: Celery's cold shutdown

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in plans:
            log.info("starting worker %s on %s: %s", p.hostname, p.device, " ".join(p.argv))
            # Own process group: a terminal's Ctrl+C reaches only the launcher, which forwards it once.
            procs.append(subprocess.Popen(p.argv, env={**base, **p.env}, process_group=0))
        while len(codes) < len(procs):
            for i, proc in enumerate(procs):
                if i in codes or proc.poll() is None:
                    continue
                codes[i] = _exit_code(proc.returncode)
                if not stopping:
                    log.error("worker %s exited with %d; stopping the others", plans[i].hostname, codes[i])
                    stopping = True
                    stop_all(signal.SIGTERM)
            time.sleep(0.2)
    finally:
        stop_all(signal.SIGTERM)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return next((code for code in codes.values() if code), 0)
