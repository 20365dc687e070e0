"""How many idle waiters and event streams one API process holds: `python -m bench.idle_waits [WAITS] [STREAMS]`.

One gunicorn process as `mlq api` runs it (gevent, api/gunicorn_conf.py) on a Redis of its own; a job record that
never runs (no worker); WAITS clients blocked in `GET /v1/jobs/{id}?wait=30` and STREAMS clients on its event stream,
all from one asyncio process. While they are held, it reads the API process's RSS and CPU over a quiet window and
times /healthz; the table goes to stdout (docs/operations.md quotes it).
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from bench.stack import Stack, cpu_seconds, free_port, rss_mb, wait_http
from mlqueue.dev import gunicorn_argv
from worker.jobs import JobStore

HOLD_S = 20.0  # the quiet window measured; every wait asks for 30 s, so none ends inside it


async def hold(base: str, job_id: str, waits: int, streams: int, ready: asyncio.Event, done: asyncio.Event) -> int:
    limits = httpx.Limits(max_connections=waits + streams + 10, max_keepalive_connections=waits + streams + 10)
    answered = 0
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=60), limits=limits) as http:
        async def wait_one() -> None:
            nonlocal answered
            await http.get(f"/v1/jobs/{job_id}?wait=30")
            answered += 1

        async def stream_one() -> None:
            async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                async for _ in response.aiter_lines():
                    if done.is_set():
                        return

        tasks = [asyncio.create_task(wait_one()) for _ in range(waits)]
        tasks += [asyncio.create_task(stream_one()) for _ in range(streams)]
        ready.set()
        await done.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return answered


def held(base: str) -> float:
    return gauge(base, "mlq_waits_in_progress") + gauge(base, "mlq_streams_in_progress")


def gauge(base: str, name: str) -> float:
    # A long timeout: while 2,000 waits arrive at once, the API spends seconds of CPU taking them in.
    for line in httpx.get(base + "/metrics", timeout=60).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def run(waits: int, streams: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * (waits + streams) + 256)), hard))
    stack = Stack(Path(tempfile.mkdtemp(prefix="mlq-idle-")))
    try:
        url = stack.redis()
        job = JobStore(redis.Redis.from_url(url, decode_responses=True)).create("default", "train", "idle", {})
        port = free_port()
        env = {"MLQ_REDIS_URL": url, "MLQ_HOME": str(stack.workdir / "home"),
               "MLQ_MAX_WAITS": str(waits + streams + 10), "MLQ_MAX_WAITS_PER_TENANT": str(waits + streams + 10)}
        api = stack.spawn("api", gunicorn_argv("127.0.0.1", port, 1), env)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", api)
        worker_pid = max(api.pids)  # the gunicorn worker (the master is the first pid)
        rss_before = rss_mb(worker_pid)
        ready, done = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(hold(base, job["id"], waits, streams, ready, done))
        await ready.wait()
        deadline = time.monotonic() + 60
        taken_in = time.monotonic()
        while await asyncio.to_thread(held, base) < waits + streams:
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not take every wait within 60 s")
            await asyncio.sleep(0.5)
        taken_in = time.monotonic() - taken_in
        cpu0, t0 = cpu_seconds([worker_pid]), time.monotonic()
        probes = []
        while time.monotonic() - t0 < HOLD_S:
            started = time.monotonic()
            await asyncio.to_thread(httpx.get, base + "/healthz")
            probes.append((time.monotonic() - started) * 1000)
            await asyncio.sleep(0.5)
        cpu = (cpu_seconds([worker_pid]) - cpu0) / (time.monotonic() - t0)
        rss_held = rss_mb(worker_pid)
        redis_clients = redis.Redis.from_url(url).info("clients")["connected_clients"]
        done.set()
        await holder
        print("| waits | streams | all taken in (s) | API RSS idle → held (MB) | per waiter (KB) | "
              "API CPU while held | /healthz p50 / max (ms) | Redis connections |")
        print("|---|---|---|---|---|---|---|---|")
        per = (rss_held - rss_before) * 1024 / max(waits + streams, 1)
        print(f"| {waits} | {streams} | {taken_in:.1f} | {rss_before:.0f} → {rss_held:.0f} | {per:.1f} | "
              f"{cpu:.1%} of a core | {statistics.median(probes):.1f} / {max(probes):.1f} | {redis_clients} |")
    finally:
        stack.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, int(sys.argv[2]) if len(sys.argv) > 2 else 0))
