"""Processes for the benchmark: a private redis-server, gunicorn apps and Celery workers, and /proc readings.

Everything runs on ports and a Redis of its own (never the test Redis at 6379), with one torch thread per process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """`pid` and all its descendants (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds (a process gone since counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def holds_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pids(self) -> list[int]:
        return children(self.popen.pid)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class Stack:
    """The processes of one benchmark run; `close()` stops them all (SIGTERM, then SIGKILL)."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        env = {**os.environ, **self.env, **(extra_env or {})}
        with log.open("ab") as out:
            popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def redis(self) -> str:
        port = free_port()
        proc = self.spawn(
            "redis", ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
        )
        url = f"redis://127.0.0.1:{port}/0"
        import redis as redis_py

        deadline = time.monotonic() + 10
        while True:
            try:
                redis_py.Redis.from_url(url).ping()
                break
            except redis_py.ConnectionError:
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{proc.tail()}") from None
                time.sleep(0.05)
        return url

    def gunicorn(
        self, name: str, target: str, workers: int = 1, threads: int = 32, extra_env: dict[str, str] | None = None
    ) -> tuple[Proc, str]:
        port = free_port()
        proc = self.spawn(
            name,
            [
                str(BIN / "gunicorn"),
                "-w",
                str(workers),
                "-k",
                "gthread",
                "--threads",
                str(threads),
                "-b",
                f"127.0.0.1:{port}",
                "--backlog",
                "2048",
                "--log-level",
                "warning",
                target,
            ],
            extra_env,
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", proc)
        return proc, url

    def api(
        self, name: str, workers: int = 1, worker_class: str = "gevent", extra_env: dict[str, str] | None = None
    ) -> tuple[Proc, str]:
        """mlqueue's API exactly as `mlq api` runs it (api/gunicorn_conf.py; gevent unless told otherwise)."""
        from mlqueue.dev import gunicorn_argv

        port = free_port()
        argv = gunicorn_argv("127.0.0.1", port, workers, worker_class)
        proc = self.spawn(name, [*argv[:-1], "--log-level", "warning", argv[-1]], extra_env)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", proc)
        return proc, url

    def celery(
        self, name: str, app: str, queues: str, pool: str = "prefork", extra_env: dict[str, str] | None = None
    ) -> Proc:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "-P",
            pool,
            "-c",
            "1",
            "--loglevel",
            "info",
            "--without-gossip",
            "--without-mingle",
        ]
        return self.spawn(name, argv, {"CUDA_VISIBLE_DEVICES": "", **(extra_env or {})})

    def stop(self, proc: Proc, timeout: float = 30) -> None:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def wait_http(url: str, proc: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not answer {url}:\n{proc.tail()}")
        time.sleep(0.1)
