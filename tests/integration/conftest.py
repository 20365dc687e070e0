"""Real Celery workers for integration tests: subprocesses started with the launcher's own command line.

Redis is flushed once per module, not per test: a flush under a running worker would drop kombu's queue
bindings and the workers' liveness keys. Tests keep apart by using their own model names and job ids.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_check import require_redis

from store.liveness import WorkerLiveness
from store.settings import Settings
from worker.launcher import plan

ROOT = Path(__file__).resolve().parents[2]


def session_redis_url() -> str:
    # Read when a fixture runs, not at import: this conftest is imported before tests/conftest.py's
    # pytest_configure starts the session's private redis-server and sets MLQ_TEST_REDIS_URL, so a module-level
    # constant pointed every run at the shared Redis on 6379, where parallel runs flushed each other.
    return os.environ.get("MLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


READY_TIMEOUT_S = 120.0


@dataclass
class WorkerProcess:
    """A running `celery worker` subprocess and what it first announced."""

    proc: subprocess.Popen[bytes]
    name: str  # the node name's prefix, unique per test run
    log_path: Path
    first_record: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"


@pytest.fixture(scope="module")
def mlq_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for the test's workers: a fresh MLQ_HOME and the test Redis db, flushed before and after."""
    url = session_redis_url()
    client = require_redis(url)
    client.flushdb()
    home = tmp_path_factory.mktemp("mlq-home")
    yield Settings(redis_url=url, home=home, heartbeat_s=0.5)
    client.flushdb()
    client.close()


def _wait_until_announced(worker: WorkerProcess, liveness: WorkerLiveness) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"worker {worker.name} exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        for record in liveness.workers():
            if record.get("hostname", "").startswith(worker.name + "@"):
                worker.first_record = record
                return
        time.sleep(0.1)
    pytest.fail(f"worker {worker.name} did not announce itself within {READY_TIMEOUT_S:.0f} s:\n"
                f"{worker.log_tail()}")


def _stop(worker: WorkerProcess) -> None:
    if worker.proc.poll() is None:
        worker.proc.send_signal(signal.SIGTERM)  # warm shutdown: the prefork parent stops its child
        try:
            worker.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def start_worker(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A function that starts a worker for `queues` and returns once its liveness key says it is ready."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")
    client = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    liveness = WorkerLiveness(client)

    def start(queues: list[str], preload: str = "") -> WorkerProcess:
        (worker_plan,) = plan("cpu", queues, concurrency=1, loglevel="info")
        name = f"{'-'.join(queues)}-{uuid.uuid4().hex[:8]}"
        argv = list(worker_plan.argv)
        argv[argv.index("-n") + 1] = f"{name}@%h"
        env = {**os.environ, **worker_plan.env, "MLQ_REDIS_URL": mlq_settings.redis_url,
               "MLQ_HOME": str(mlq_settings.home), "MLQ_HEARTBEAT_S": str(mlq_settings.heartbeat_s),
               "MLQ_PRELOAD": preload, "MLQ_TORCH_THREADS": "1"}
        log_path = logs / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    process_group=0)
        worker = WorkerProcess(proc, name, log_path)
        started.append(worker)
        _wait_until_announced(worker, liveness)
        return worker

    yield start
    for worker in started:
        _stop(worker)
    client.close()
