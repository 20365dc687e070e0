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
from kombu.exceptions import OperationalError
from reliability_support import PrivateRedis, wait_leases_expired

from store.jobs import JobStore
from store.leases import Leases, Sweeper, claim_key, heartbeat_key, parse_drain
from store.script_outcomes import BeginOutcome, ClaimOutcome, FinishOutcome, PreemptOutcome, SweepOutcome
from worker.train_hooks import requeue_on_shutdown

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
    assert (first, why) == (1, BeginOutcome.STARTED)
    # a live heartbeat: a duplicate message is skipped
    assert first is not None
    assert leases.begin(job_id, "w2") == (None, BeginOutcome.RUNNING_ELSEWHERE)
    wait_leases_expired(leases.redis, job_id)  # w1 died: its lease ran out
    assert leases.sweep_one(job_id) is SweepOutcome.REQUEUED
    assert leases.jobs.get(job_id)["status"] == "queued"  # type: ignore[index]
    assert leases.heartbeat(job_id, first, "w1") is False  # w1 was only slow: it learns it lost the job
    second, _ = leases.begin(job_id, "w2")
    assert second == 2
    assert leases.finish(job_id, first, "succeeded", result={"version": 9}) is FinishOutcome.FENCED
    assert leases.finish(job_id, second, "succeeded", result={"version": 1}) is FinishOutcome.DONE
    job = leases.jobs.get(job_id)
    assert job is not None and (job["status"], job["result"], job["attempts"]) == ("succeeded", {"version": 1}, 2)
    assert leases.begin(job_id, "w3") == (None, BeginOutcome.FINAL)  # a message redelivered hours later


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
    assert acted == {cancelled: SweepOutcome.CANCELLED, poison: SweepOutcome.POISON}
    assert leases.jobs.get(cancelled)["status"] == "cancelled"  # type: ignore[index]
    failed = leases.jobs.get(poison)
    assert failed is not None and failed["status"] == "failed" and error_of(failed)["type"] == "worker_lost"
    assert leases.jobs.get(alive)["status"] == "running" and sent == []  # type: ignore[index]
    wait_leases_expired(leases.redis, alive)
    assert dict(sweeper.sweep()) == {alive: SweepOutcome.REQUEUED}
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
    assert leases.claim_registration(job_id, first) == (ClaimOutcome.CLAIMED, "")  # type: ignore[arg-type]
    wait_leases_expired(leases.redis, job_id)
    leases.sweep_one(job_id)
    second, _ = leases.begin(job_id, "w2")
    assert leases.claim_registration(job_id, first) == (ClaimOutcome.FENCED, "")  # type: ignore[arg-type]
    assert leases.claim_registration(job_id, second) == (ClaimOutcome.HELD, "1")  # type: ignore[arg-type]
    assert leases.claim_registration(job_id, second, takeover_from="1") == (  # type: ignore[arg-type]
        ClaimOutcome.CLAIMED,
        "",
    )
    assert leases.redis.get(claim_key(job_id)) == "2"

    other = new_job(leases)
    token, _ = leases.begin(other, "w1")
    leases.jobs.request_cancel(other)
    assert leases.claim_registration(other, token) == (ClaimOutcome.CANCELLED, "")  # type: ignore[arg-type]


def test_a_preempted_attempt_requeues_without_using_up_an_attempt(leases: Leases) -> None:
    job_id = new_job(leases)
    for attempt in (1, 2, 3):
        token, _ = leases.begin(job_id, "w1")
        assert token == attempt
        assert token is not None and leases.preempt(job_id, token) is PreemptOutcome.REQUEUED
        assert leases.redis.exists(heartbeat_key(job_id)) == 0
    job = leases.jobs.get(job_id)
    assert job is not None and job["status"] == "queued" and job_id not in leases.jobs.running_ids()


def test_a_drained_job_goes_back_with_its_message_or_else_is_left_to_the_sweeper(leases: Leases) -> None:
    """worker.train_hooks.requeue_on_shutdown, shared by the train, batch and optimize tasks."""
    job_id = new_job(leases)
    token, _ = leases.begin(job_id, "w1")
    assert token is not None
    sent: list[str] = []
    requeue_on_shutdown(leases, job_id, token, lambda: sent.append(job_id), "test")
    job = leases.jobs.get(job_id)
    assert sent == [job_id] and job is not None and job["status"] == "queued"

    # The message cannot be sent (the broker is down): the job must not stay queued with no message, which nothing
    # would ever run. It looks running with a dead holder again, and the sweeper requeues it once the lease expires.
    token, _ = leases.begin(job_id, "w1")
    assert token is not None

    def broker_down() -> object:
        raise OperationalError("broker down")

    requeue_on_shutdown(leases, job_id, token, broker_down, "test")
    job = leases.jobs.get(job_id)
    assert job is not None and job["status"] == "running" and job_id in leases.jobs.running_ids()
    wait_leases_expired(leases.redis, job_id)
    assert leases.sweep_one(job_id) is SweepOutcome.REQUEUED


def test_a_drain_record_applies_only_to_the_worker_that_wrote_it() -> None:
    deadline = time.time() + 5
    assert parse_drain(json.dumps({"deadline": deadline, "pid": os.getpid()})) == deadline
    assert parse_drain(json.dumps({"deadline": deadline, "pid": os.getppid()})) == deadline
    assert parse_drain(json.dumps({"deadline": deadline, "pid": 1 << 30})) is None
    assert parse_drain(None) is None and parse_drain("junk") is None


def lose_lease(leases: Leases, job_id: str) -> None:
    """What the expiry of the heartbeat does when the attempt's worker dies, without waiting for it."""
    leases.redis.delete(heartbeat_key(job_id))


def test_the_sweeper_fails_a_job_whose_lost_attempt_ran_past_the_time_limit(leases: Leases) -> None:
    job_id = new_job(leases)
    token, _ = leases.begin(job_id, "w1")
    assert token == 1
    started_ms = int(leases.redis.hget(leases.jobs.key(job_id), "attempt_started_ms"))  # type: ignore[arg-type]
    # The attempt began more than MLQ_JOB_TIME_LIMIT_S (3600 s here) ago, then its worker died.
    leases.redis.hset(leases.jobs.key(job_id), "attempt_started_ms", started_ms - 3601 * 1000)
    lose_lease(leases, job_id)
    assert leases.sweep_one(job_id) is SweepOutcome.TIME_LIMIT
    job = leases.jobs.get(job_id)
    assert job is not None and job["status"] == "failed" and job["error"] is not None
    assert job["error"]["type"] == "time_limit" and "MLQ_JOB_TIME_LIMIT_S=3600" in job["error"]["message"]
    assert job_id not in leases.jobs.running_ids()
    assert leases.sweep_one(job_id) is SweepOutcome.NOT_RUNNING  # a second sweeper finds nothing to do
    assert leases.begin(job_id, "w2") == (None, BeginOutcome.FINAL)  # its redelivered message is dropped


def test_without_a_time_limit_a_lost_attempt_is_requeued_however_long_it_ran(leases: Leases) -> None:
    unlimited = Leases(leases.jobs, stale_s=0.3, max_attempts=2, time_limit_s=0)
    job_id = new_job(leases)
    unlimited.begin(job_id, "w1")
    leases.redis.hset(leases.jobs.key(job_id), "attempt_started_ms", 1)  # began in 1970
    lose_lease(leases, job_id)
    assert unlimited.sweep_one(job_id) is SweepOutcome.REQUEUED
    assert leases.jobs.get(job_id)["status"] == "queued"  # type: ignore[index]


def test_a_drain_of_a_job_whose_cancel_was_requested_ends_it_cancelled_instead_of_requeuing(leases: Leases) -> None:
    job_id = new_job(leases)
    token, _ = leases.begin(job_id, "w1")
    assert token is not None
    assert leases.jobs.request_cancel(job_id)["status"] == "running"  # flagged; the attempt has not stopped yet
    assert leases.preempt(job_id, token + 1) is PreemptOutcome.FENCED  # not the running attempt: nothing changes
    assert leases.jobs.get(job_id)["status"] == "running"  # type: ignore[index]
    assert leases.preempt(job_id, token) is PreemptOutcome.CANCELLED
    job = leases.jobs.get(job_id)
    assert job is not None and job["status"] == "cancelled" and job["finished_at"]
    record = leases.redis.hgetall(leases.jobs.key(job_id))
    assert record.get("preempted") is None  # a cancelled job was not put back: no preemption counted
    assert leases.redis.exists(heartbeat_key(job_id)) == 0 and job_id not in leases.jobs.running_ids()
    assert leases.preempt(job_id, token) is PreemptOutcome.FENCED  # a second drain changes nothing
    assert leases.finish(job_id, token, "succeeded", result={}) is FinishOutcome.ALREADY_FINAL
