"""An optimize job outlives its worker like a training: the sweeper requeues it and re-sends `mlqueue.optimize`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from reliability_support import PrivateRedis, wait_leases_expired

from store.celery_config import make_celery
from store.contract import OPTIMIZE_TASK, TRAIN_QUEUE, OptimizeRequest
from store.jobs import JobStore
from store.leases import Leases, Sweeper
from store.script_outcomes import SweepOutcome
from store.settings import Settings
from worker.tasks import WorkerRuntime

REQUEST = {"model": "m", "version": 1, "method": "prune", "params": {"amount": 0.5}, "device": "auto"}


@pytest.fixture
def leases(private_redis: PrivateRedis) -> Iterator[Leases]:
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    client.flushdb()
    yield Leases(JobStore(client), stale_s=0.3, max_attempts=2, time_limit_s=3600)
    client.close()


def test_the_sweeper_requeues_an_optimize_job_whose_worker_died_and_resends_it_by_its_own_task_name(
    leases: Leases, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    job_id = str(leases.jobs.create("default", "optimize", "m", REQUEST)["id"])
    assert leases.begin(job_id, "w1")[0] == 1
    wait_leases_expired(leases.redis, job_id)  # w1 died: its lease ran out
    runtime = WorkerRuntime(Settings(redis_url=private_redis.url, home=tmp_path))
    runtime.app = make_celery(runtime.settings)
    sweeper = Sweeper(leases, runtime.send_train, 0.1)
    sweeper._quiet_until = 0
    sweeper.min_redis_uptime_s = 0
    assert dict(sweeper.sweep()) == {job_id: SweepOutcome.REQUEUED}
    assert leases.jobs.get(job_id)["status"] == "queued"  # type: ignore[index]
    (raw,) = leases.redis.lrange(TRAIN_QUEUE, 0, -1)  # the message kombu put on the train queue
    message = json.loads(raw)
    assert message["headers"]["task"] == OPTIMIZE_TASK and message["headers"]["id"] == job_id
    (args, _, _) = json.loads(base64.b64decode(message["body"]))
    request = OptimizeRequest.decode(args[0])  # the job's own request, as the API queued it
    assert (request.job_id, request.method, request.version, request.params) == (job_id, "prune", 1, {"amount": 0.5})
    runtime.app.close()
