"""The soak's processes: Redis with AOF on a private port, the API (gunicorn, `mlq api`'s command line) on a fixed
port, and Celery workers (2 train, 1 inference, 1 batch); each one can be killed and started again in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from bench.stack import ROOT, free_port

# Fast leases so that a killed worker's job is requeued within seconds (as the chaos tests use).
WORKER_ENV = {
    "MLQ_HEARTBEAT_S": "0.5",
    "MLQ_STALE_JOB_S": "3",
    "MLQ_SHUTDOWN_GRACE_S": "2",
    "MLQ_MAX_ATTEMPTS": "10",  # a job may be killed several times in a long soak: still one end, never poison
    "MLQ_TORCH_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
}
WORKERS = {"train-1": "train", "train-2": "train", "inference": "inference", "batch": "batch"}


class SoakStack:
    def __init__(self, workdir: Path, tokens: dict[str, str]) -> None:
        self.workdir = workdir
        self.redis_port = free_port()
        self.api_port = free_port()
        self.env = {
            **WORKER_ENV,
            "MLQ_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "MLQ_HOME": str(workdir / "home"),
            "MLQ_AUTH_TOKENS": ",".join(f"{tenant}:{token}" for token, tenant in tokens.items()),
            "MLQ_MAX_ACTIVE_JOBS": "1000",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, decode_responses=True, socket_timeout=10)

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            env = {**os.environ, **self.env}
            self.procs[name] = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
            )

    def start_redis(self) -> None:
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(data)]
        argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        self._spawn("redis", argv)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)

    def start_api(self) -> None:
        from mlqueue.dev import gunicorn_argv

        argv = gunicorn_argv("127.0.0.1", self.api_port, 1)
        self._spawn("api", [*argv[:-1], "--log-level", "warning", argv[-1]])
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.api_url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.procs["api"].poll() is not None:
                raise RuntimeError("the API did not start; see api.log")
            time.sleep(0.2)

    def start_worker(self, name: str) -> None:
        queue = WORKERS[name]
        argv = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queue, "-n", f"{name}@%h"]
        argv += ["-P", "prefork", "-c", "1", "--loglevel", "info", "--without-gossip", "--without-mingle"]
        self._spawn(name, argv)

    def kill(self, name: str) -> None:
        """SIGKILL the process and all its children (a lost machine)."""
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def restart_redis(self) -> None:
        """A Redis restart: SIGTERM (it writes its AOF and exits), then the same port and directory again."""
        proc = self.procs["redis"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        self.start_redis()

    def close(self) -> None:
        for name in [n for n in self.procs if n != "redis"] + ["redis"]:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
