"""Real Celery worker subprocesses of the tests (tests/integration/conftest.py's `start_worker`, tests/reliability's
WorkerFleet): what one is, how to wait until it announced itself, how to stop it.

Plain helpers live here, not in a conftest: conftest modules are not importable by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from polling import wait_until

from store.liveness import WorkerLiveness

READY_TIMEOUT_S = 120.0


def session_redis_url() -> str:
    # Read when a fixture runs, not at import: conftest modules are imported before tests/conftest.py's
    # pytest_configure starts the session's private redis-server and sets MLQ_TEST_REDIS_URL, so a module-level
    # constant pointed every run at the shared Redis on 6379, where parallel runs flushed each other.
    return os.environ.get("MLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


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


# The `start_worker` fixture: start(queues, preload="", wait=True) → a worker that announced itself.
StartWorker = Callable[..., WorkerProcess]


def wait_until_announced(worker: WorkerProcess, liveness: WorkerLiveness) -> None:
    """Return once the worker's liveness record is in Redis (it consumes its queues); fail if it exits first."""

    def announced() -> bool:
        if worker.proc.poll() is not None:
            pytest.fail(f"worker {worker.name} exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        for record in liveness.workers():
            if record.get("hostname", "").startswith(worker.name + "@"):
                worker.first_record = record
                return True
        return False

    try:
        wait_until(announced, READY_TIMEOUT_S, what=f"worker {worker.name} announcing itself", interval_s=0.1)
    except AssertionError as e:
        pytest.fail(f"{e}:\n{worker.log_tail()}")


def stop_worker(worker: WorkerProcess) -> None:
    stop_workers([worker])


def stop_workers(workers: list[WorkerProcess], timeout_s: float = 30.0) -> None:
    """Warm shutdown of every worker at once (SIGTERM: the prefork parent stops its child), then wait for each;
    one that is still there after `timeout_s` is killed with its process group. At once, because a warm shutdown
    takes seconds of waiting, not of work."""
    alive = [w for w in workers if w.proc.poll() is None]
    for worker in alive:
        worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for worker in alive:
        try:
            worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(timeout=10)
