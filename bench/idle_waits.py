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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.stack import Stack, cpu_seconds, free_port, rss_mb, wait_http
from mlqueue.dev import gunicorn_argv
from store.jobs import JobStore

PER_PROCESS = 800
RAMP_PER_S = 200  # new connections per second per client process
HOLD_S = 20.0  # the quiet window measured; every wait asks for 30 s, so none ends inside it


async def hold(base: str, job_id: str, waits: int, streams: int) -> None:
    """Open `waits` waits and `streams` event streams and keep them until killed (run in a process of its own).

    Plain asyncio sockets, one request at a time on each: an HTTP client library's connection pool scans its
    connections on every request, and at a thousand of them the client, not the server, would be measured."""
    host, port = base.removeprefix("http://").split(":")

    async def wait_one(i: int) -> None:
        await asyncio.sleep(i / RAMP_PER_S)  # clients arrive over seconds, not in one instant
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                while True:  # a wait ends after 30 s: ask again on the same connection, as a client would
                    writer.write(f"GET /v1/jobs/{job_id}?wait=30 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as exc:
                print(f"wait: {type(exc).__name__}: {exc}", file=sys.stderr)
                await asyncio.sleep(1)

    async def stream_one(i: int) -> None:
        await asyncio.sleep(i / RAMP_PER_S)
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                while await reader.read(4096):
                    pass
            except OSError as exc:
                print(f"stream: {type(exc).__name__}: {exc}", file=sys.stderr)
            await asyncio.sleep(1)

    await asyncio.gather(*(wait_one(i) for i in range(waits)), *(stream_one(waits + i) for i in range(streams)))


def holders(base: str, job_id: str, waits: int, streams: int, log: Any) -> list[subprocess.Popen[bytes]]:
    """Client processes holding the waits, at most PER_PROCESS connections each (one asyncio loop stalls at ~1,000)."""
    procs, left_w, left_s = [], waits, streams
    while left_w + left_s > 0:
        w = min(left_w, PER_PROCESS)
        st = min(left_s, PER_PROCESS - w)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.idle_waits", "--hold", base, job_id, str(w), str(st)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        )
        left_w, left_s = left_w - w, left_s - st
    return procs


def curl_ms(url: str) -> float:
    """Milliseconds for one request from a process of its own (this one's event loop holds every waiter)."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", url], capture_output=True, text=True, check=True
    ).stdout
    return float(out) * 1000


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
    clients: list[subprocess.Popen[bytes]] = []
    try:
        url = stack.redis()
        job = JobStore(redis.Redis.from_url(url, decode_responses=True)).create("default", "train", "idle", {})
        port = free_port()
        env = {
            "MLQ_REDIS_URL": url,
            "MLQ_HOME": str(stack.workdir / "home"),
            "MLQ_MAX_WAITS": str(waits + streams + 10),
            "MLQ_MAX_WAITS_PER_TENANT": str(waits + streams + 10),
        }
        api = stack.spawn("api", gunicorn_argv("127.0.0.1", port, 1), env)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", api)
        worker_pid = max(api.pids)  # the gunicorn worker (the master is the first pid)
        rss_before = rss_mb(worker_pid)
        clients = holders(base, job["id"], waits, streams, (stack.workdir / "clients.log").open("wb"))
        deadline = time.monotonic() + 60
        taken_in = time.monotonic()
        # Each wait ends after 30 s and its client asks again, so the count dips now and then: 95 % is "all".
        while await asyncio.to_thread(held, base) < 0.95 * (waits + streams):
            if time.monotonic() > deadline:
                now = await asyncio.to_thread(held, base)
                raise RuntimeError(f"the API holds {now:.0f} of {waits + streams} waits after 60 s")
            await asyncio.sleep(0.5)
        taken_in = time.monotonic() - taken_in
        cpu0, t0 = cpu_seconds([worker_pid]), time.monotonic()
        probes = []
        while time.monotonic() - t0 < HOLD_S:
            probes.append(await asyncio.to_thread(curl_ms, base + "/healthz"))
            await asyncio.sleep(0.5)
        cpu = (cpu_seconds([worker_pid]) - cpu0) / (time.monotonic() - t0)
        holding = await asyncio.to_thread(held, base)
        rss_held = rss_mb(worker_pid)
        redis_clients = redis.Redis.from_url(url).info("clients")["connected_clients"]
        print(
            "| waits | streams | held at the end | 95 % taken in (s) | API RSS idle → held (MB) | per waiter (KB) | "
            "API CPU while held | /healthz p50 / max (ms) | Redis connections |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        per = (rss_held - rss_before) * 1024 / max(holding, 1)
        print(
            f"| {waits} | {streams} | {holding:.0f} | {taken_in:.1f} | {rss_before:.0f} → {rss_held:.0f} | "
            f"{per:.1f} | {cpu:.1%} of a core | {statistics.median(probes):.1f} / {max(probes):.1f} | "
            f"{redis_clients} |"
        )
    finally:
        for client in clients:  # on every path: a client left behind reconnects in a loop forever
            client.kill()
        stack.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if sys.argv[1:2] == ["--hold"]:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        asyncio.run(hold(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
        sys.exit(0)
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, int(sys.argv[2]) if len(sys.argv) > 2 else 0))
