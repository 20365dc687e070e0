"""The lease scripts of store/leases.py on a real Redis, without workers: fences, sweeps, claims, drains."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from job_harness import error_of
from reliability_support import PrivateRedis, wait_leases_expired

from store.jobs import JobStore
from store.leases import Leases, Sweeper, claim_key, heartbeat_key, parse_drain

REQUEST = {"model": "m", "dataset_id": "ds_x", "target": "y", "algorithm": "mlp", "params": {"epochs": 3}}


@pytest.fixture
def leases(private_redis: PrivateRedis) -> Iterator[Leases]:
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    client.flushdb()
    yield Leases(JobStore(client), stale_s=0.3, max_attempts=2, time_limit_s=3600)
    client.close()


def new_job(leases: Leases) -> str:
    return str(leases.jobs.create("default", "train", "m", REQUEST)["id"])


def test_an_older_attempt_can_neither_beat_nor_finish_once_a_newer_one_began(leases: Leases) -> None:
    job_id = new_job(leases)
    first, why = leases.begin(job_id, "w1")
    assert (first, why) == (1, "started")
    assert first is not None
    assert leases.begin(job_id, "w2") == (None, "running_elsewhere")  # live heartbeat: a duplicate is skipped
    wait_leases_expired(leases.redis, job_id)  # w1 died: its lease ran out
    assert leases.sweep_one(job_id) == "requeued"
    assert leases.jobs.get(job_id)["status"] == "queued"  # type: ignore[index]
    assert leases.heartbeat(job_id, first, "w1") is False  # w1 was only slow: it learns it lost the job
    second, _ = leases.begin(job_id, "w2")
    assert second == 2
    assert leases.finish(job_id, first, "succeeded", result={"version": 9}) == 2  # fenced
    assert leases.finish(job_id, second, "succeeded", result={"version": 1}) == 1
    job = leases.jobs.get(job_id)
    assert job is not None and (job["status"], job["result"], job["attempts"]) == ("succeeded", {"version": 1}, 2)
    assert leases.begin(job_id, "w3") == (None, "final")  # a message redelivered hours later


def test_a_running_job_whose_holder_died_is_taken_over_by_its_redelivered_message(leases: Leases) -> None:
    job_id = new_job(leases)
    assert leases.begin(job_id, "w1")[0] == 1
    wait_leases_expired(leases.redis, job_id)
    assert leases.begin(job_id, "w2")[0] == 2


def test_the_sweeper_ends_jobs_it_must_not_requeue(leases: Leases) -> None:
    cancelled, poison, alive = new_job(leases), new_job(leases), new_job(leases)
    for job_id in (cancelled, poison, alive):
        leases.begin(job_id, "w1")
    leases.jobs.request_cancel(cancelled)
    leases.redis.hset(leases.jobs.key(poison), "attempts", 2)  # MLQ_MAX_ATTEMPTS=2 used up
    wait_leases_expired(leases.redis, cancelled, poison, alive)
    leases.heartbeat(alive, 1, "w1")
    sent: list[dict[str, Any]] = []
    sweeper = Sweeper(leases, sent.append, 0.1)
    sweeper._quiet_until = 0
    sweeper.min_redis_uptime_s = 0
    acted = dict(sweeper.sweep())
    assert acted == {cancelled: "cancelled", poison: "poison"}
    assert leases.jobs.get(cancelled)["status"] == "cancelled"  # type: ignore[index]
    failed = leases.jobs.get(poison)
    assert failed is not None and failed["status"] == "failed" and error_of(failed)["type"] == "worker_lost"
    assert leases.jobs.get(alive)["status"] == "running" and sent == []  # type: ignore[index]
    wait_leases_expired(leases.redis, alive)
    assert dict(sweeper.sweep()) == {alive: "requeued"}
    assert sent == [{**REQUEST, "job_id": alive, "tenant": "default"}]


def test_a_failed_resend_puts_the_job_back_for_the_next_sweep(leases: Leases) -> None:
    job_id = new_job(leases)
    leases.begin(job_id, "w1")
    wait_leases_expired(leases.redis, job_id)

    def broken(_: dict[str, Any]) -> None:
        raise redis.ConnectionError("broker down")

    sweeper = Sweeper(leases, broken, 0.1)
    sweeper._quiet_until = 0
    sweeper.min_redis_uptime_s = 0
    with pytest.raises(redis.ConnectionError):
        sweeper.sweep()
    assert leases.jobs.get(job_id)["status"] == "running" and job_id in leases.jobs.running_ids()  # type: ignore[index]


def test_one_registration_per_job_and_none_after_a_cancel(leases: Leases) -> None:
    job_id = new_job(leases)
    first, _ = leases.begin(job_id, "w1")
    assert leases.claim_registration(job_id, first) == (1, "")  # type: ignore[arg-type]
    wait_leases_expired(leases.redis, job_id)
    leases.sweep_one(job_id)
    second, _ = leases.begin(job_id, "w2")
    assert leases.claim_registration(job_id, first) == (0, "")  # type: ignore[arg-type]  # fenced
    assert leases.claim_registration(job_id, second) == (-2, "1")  # type: ignore[arg-type]  # attempt 1 holds it
    assert leases.claim_registration(job_id, second, takeover_from="1") == (1, "")  # type: ignore[arg-type]
    assert leases.redis.get(claim_key(job_id)) == "2"

    other = new_job(leases)
    token, _ = leases.begin(other, "w1")
    leases.jobs.request_cancel(other)
    assert leases.claim_registration(other, token) == (-1, "")  # type: ignore[arg-type]


def test_a_preempted_attempt_requeues_without_using_up_an_attempt(leases: Leases) -> None:
    job_id = new_job(leases)
    for attempt in (1, 2, 3):
        token, _ = leases.begin(job_id, "w1")
        assert token == attempt
        assert leases.preempt(job_id, token) == 1
        assert leases.redis.exists(heartbeat_key(job_id)) == 0
    job = leases.jobs.get(job_id)
    assert job is not None and job["status"] == "queued" and job_id not in leases.jobs.running_ids()


def test_a_drain_record_applies_only_to_the_worker_that_wrote_it() -> None:
    deadline = time.time() + 5
    assert parse_drain(json.dumps({"deadline": deadline, "pid": os.getpid()})) == deadline
    assert parse_drain(json.dumps({"deadline": deadline, "pid": os.getppid()})) == deadline
    assert parse_drain(json.dumps({"deadline": deadline, "pid": 1 << 30})) is None
    assert parse_drain(None) is None and parse_drain("junk") is None
