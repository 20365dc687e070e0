"""Chaos helpers: a private redis-server that tests may stop and restart, and real worker subprocesses on it.

`private_redis` is a redis-server of the test's own on a free port (never the shared one on 6379), so a test can
kill it, restart it, flush it or fill it without touching anybody else's data. The worker helpers are those of
tests/integration/conftest.py's `start_worker` (tests/worker_processes.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
from job_harness import TENANT as TENANT
from job_harness import JobHarness, breast_cancer_csv, iris_csv
from job_harness import dump as dump  # re-exported for the chaos tests
from polling import wait_until
from private_redis import PrivateRedis as PrivateRedis
from worker_processes import WorkerProcess, stop_worker, stop_workers, wait_until_announced

from store.leases import heartbeat_key
from store.liveness import WorkerLiveness
from store.records import JobRecord
from store.settings import Settings
from training.manifest import ModelManifest
from worker.launcher import plan

ROOT = Path(__file__).resolve().parents[2]


def run_private_redis(tmp: Path, appendonly: bool) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs redis-server on PATH for tests/reliability (apt-get install redis-server)")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Worker settings for chaos tests: fast heartbeats, stale jobs found within ~2 s, short grace.
FAST_ENV = {
    "MLQ_HEARTBEAT_S": "0.5",
    "MLQ_STALE_JOB_S": "2",
    "MLQ_SHUTDOWN_GRACE_S": "2",
    "MLQ_MAX_ATTEMPTS": "3",
    "MLQ_TORCH_THREADS": "1",
}


class WorkerFleet:
    """Starts `celery worker` subprocesses (the launcher's command line) on one Redis and one MLQ_HOME."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.started: list[WorkerProcess] = []
        self.client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.liveness = WorkerLiveness(self.client)

    def start(self, queues: list[str], env: dict[str, str] | None = None, wait: bool = True) -> WorkerProcess:
        (worker_plan,) = plan("cpu", queues, concurrency=1, loglevel="info")
        name = f"{'-'.join(queues)}-{uuid.uuid4().hex[:8]}"
        argv = list(worker_plan.argv)
        argv[argv.index("-n") + 1] = f"{name}@%h"
        full_env = {
            **os.environ,
            **worker_plan.env,
            **FAST_ENV,
            "MLQ_REDIS_URL": self.settings.redis_url,
            "MLQ_HOME": str(self.settings.home),
            **(env or {}),
        }
        log_path = self.logs / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        worker = WorkerProcess(proc, name, log_path)
        self.started.append(worker)
        if wait:
            wait_until_announced(worker, self.liveness)
        return worker

    def wait_ready(self, worker: WorkerProcess) -> WorkerProcess:
        """For a worker started with wait=False: return once it announced itself (start other things meanwhile)."""
        wait_until_announced(worker, self.liveness)
        return worker

    @staticmethod
    def kill(worker: WorkerProcess) -> None:
        """SIGKILL the whole worker (main process and its pool children): a machine losing power."""
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(timeout=15)

    @staticmethod
    def stop(worker: WorkerProcess) -> None:
        stop_worker(worker)
        # Whatever the warm shutdown left behind (it should leave nothing) goes with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        stop_workers(self.started)  # all at once
        for worker in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.proc.pid, signal.SIGKILL)  # whatever the warm shutdowns left behind
        self.client.close()


JOB_TIMEOUT_S = 90.0


class ChaosHarness(JobHarness):
    """The shared job harness with the API's record shape, datasets made once, and waits on job records."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, JOB_TIMEOUT_S)
        self._datasets: dict[str, str] = {}

    def dataset(self, kind: str = "breast_cancer") -> str:
        if kind not in self._datasets:
            csv = breast_cancer_csv() if kind == "breast_cancer" else iris_csv()
            self._datasets[kind] = self.save_dataset(csv, kind)
        return self._datasets[kind]

    def train_job(
        self, model: str, params: dict[str, Any] | None = None, algorithm: str = "mlp", send: bool = True
    ) -> str:
        """A training job as the API records it (the request minus job_id and tenant), sent by name."""
        from store.contract import TrainRequest
        from store.ids import new_id

        job_id = new_id("job")
        if algorithm == "mlp":
            dataset, target = self.dataset("breast_cancer"), "diagnosis"
        else:
            dataset, target = self.dataset("iris"), "species"
        request = TrainRequest(
            job_id=job_id,
            tenant=TENANT,
            model=model,
            dataset_id=dataset,
            target=target,
            algorithm=algorithm,
            params=params or {},
            device="cpu",
        ).encode()
        record = {k: v for k, v in request.items() if k not in ("job_id", "tenant")}
        self.jobs.create(TENANT, "train", model, record, job_id=job_id)
        if send:
            self.send(request)
        return job_id

    def request_of(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        assert job is not None
        return {**(job["request"] or {}), "job_id": job_id, "tenant": job["tenant"]}

    def wait_for(
        self, job_id: str, predicate: Callable[[JobRecord], bool], timeout_s: float = JOB_TIMEOUT_S, what: str = ""
    ) -> JobRecord:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.jobs.get(job_id)
            if job is not None and predicate(job):
                return job
            assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}: {dump(job)}"
            time.sleep(0.02)

    def versions(self, model: str) -> list[ModelManifest]:
        from training.errors import ResourceNotFound

        try:
            return list(self.registry.get_model(TENANT, model)["versions"])
        except ResourceNotFound:
            return []


def epoch_of(job: Mapping[str, Any]) -> int:
    return int((job.get("progress") or {}).get("epoch") or 0)


def running_at_epoch(n: int, attempt: int | None = None) -> Callable[[JobRecord], bool]:
    def ok(job: JobRecord) -> bool:
        return job["status"] == "running" and epoch_of(job) >= n and (attempt is None or job["attempts"] == attempt)

    return ok


def wait_leases_expired(client: redis.Redis, *job_ids: str, timeout_s: float = 30.0) -> None:
    """Return once no heartbeat holds these jobs any more: their holders "died" and the leases' PX ran out.
    (EXISTS expires a key whose time is up, so this sees the expiry as soon as Redis does.)"""
    keys = [heartbeat_key(job_id) for job_id in job_ids]
    wait_until(lambda: client.exists(*keys) == 0, timeout_s, what=f"the leases of {job_ids} expired", interval_s=0.02)
