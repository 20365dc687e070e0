"""Real Celery workers for integration tests: subprocesses started with the launcher's own command line.

Redis is flushed once per module, not per test: a flush under a running worker would drop kombu's queue
bindings and the workers' liveness keys. Tests keep apart by using their own model names and job ids.
The plain helpers (WorkerProcess, waiting, stopping) live in tests/worker_processes.py.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_check import require_redis
from worker_processes import WorkerProcess, session_redis_url, stop_workers, wait_until_announced

from store.liveness import WorkerLiveness
from store.settings import Settings
from worker.launcher import plan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mlq_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for the test's workers: a fresh MLQ_HOME and the test Redis db, flushed before and after."""
    url = session_redis_url()
    client = require_redis(url)
    client.flushdb()
    home = tmp_path_factory.mktemp("mlq-home")
    # A 2 s shutdown grace (default 20 s): a module's workers stop at its end, maybe mid-training, and no test here
    # is about the grace (tests/reliability/test_worker_recovery.py is).
    yield Settings(redis_url=url, home=home, heartbeat_s=0.5, shutdown_grace_s=2.0)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def start_worker(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A function that starts a worker for `queues` and returns once its liveness key says it is ready (with
    wait=False at once: several workers then boot side by side; wait_until_announced each)."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")
    client = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    liveness = WorkerLiveness(client)

    def start(queues: list[str], preload: str = "", wait: bool = True) -> WorkerProcess:
        (worker_plan,) = plan("cpu", queues, concurrency=1, loglevel="info")
        name = f"{'-'.join(queues)}-{uuid.uuid4().hex[:8]}"
        argv = list(worker_plan.argv)
        argv[argv.index("-n") + 1] = f"{name}@%h"
        env = {
            **os.environ,
            **worker_plan.env,
            "MLQ_REDIS_URL": mlq_settings.redis_url,
            "MLQ_HOME": str(mlq_settings.home),
            "MLQ_HEARTBEAT_S": str(mlq_settings.heartbeat_s),
            "MLQ_SHUTDOWN_GRACE_S": str(mlq_settings.shutdown_grace_s),
            "MLQ_PRELOAD": preload,
            "MLQ_TORCH_THREADS": "1",
        }
        log_path = logs / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        worker = WorkerProcess(proc, name, log_path)
        started.append(worker)
        if wait:
            wait_until_announced(worker, liveness)
        return worker

    yield start
    stop_workers(started)
    client.close()
