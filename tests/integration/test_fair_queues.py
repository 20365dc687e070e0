"""The fair picker (store/fair.py, fair_enqueue.lua, fair_pick.lua) against a real Redis, without workers:
tenants in turn, weights, a tenant's searches in turn, the running cap, and what a pick does with stale entries."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from store import keys
from store.contract import BATCH_QUEUE, TRAIN_QUEUE
from store.fair import FairQueues
from store.jobs import JobStore
from store.leases import Leases
from store.script_outcomes import FairEnqueueOutcome, FairPickOutcome

pytestmark = pytest.mark.integration  # a real Redis (the session's private redis-server)


@pytest.fixture
def jobs(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, ttl_s=3600)


def queue_jobs(
    jobs: JobStore, fair: FairQueues, tenant: str, n: int, flow: str = "jobs", queue: str = TRAIN_QUEUE
) -> list[str]:
    ids = []
    for _ in range(n):
        job = jobs.create(tenant, "batch_predict" if queue == BATCH_QUEUE else "train", "m", {})
        assert fair.enqueue(queue, tenant, job["id"], flow) is FairEnqueueOutcome.QUEUED
        ids.append(job["id"])
    return ids


def drain(fair: FairQueues, jobs: JobStore, queue: str = TRAIN_QUEUE, start: bool = True) -> list[str]:
    """Pick until empty; each pick is started (its status leaves queued) as a worker would."""
    order = []
    while (pick := fair.pick(queue)).outcome is FairPickOutcome.PICKED:
        assert pick.job_id is not None
        order.append(pick.job_id)
        if start:
            jobs.finish(pick.job_id, "succeeded")
    return order


def test_a_tenant_queued_after_another_ones_twenty_jobs_is_served_second(
    jobs: JobStore, redis_client: redis.Redis
) -> None:
    fair = FairQueues(redis_client)
    a = queue_jobs(jobs, fair, "alice", 20)
    b = queue_jobs(jobs, fair, "bob", 1)
    order = drain(fair, jobs)
    assert order.index(b[0]) <= 2
    assert [j for j in order if j in a] == a, "a tenant's own jobs keep their order"
    assert fair.pick(TRAIN_QUEUE).outcome is FairPickOutcome.EMPTY


def test_weights_share_the_picks_in_proportion(jobs: JobStore, redis_client: redis.Redis) -> None:
    fair = FairQueues(redis_client, weights={"alice": 3})
    a = set(queue_jobs(jobs, fair, "alice", 30))
    queue_jobs(jobs, fair, "bob", 30)
    first = drain_n(fair, jobs, 20)
    assert Counter("alice" if j in a else "bob" for j in first) == {"alice": 15, "bob": 5}


def drain_n(fair: FairQueues, jobs: JobStore, n: int) -> list[str]:
    order = []
    for _ in range(n):
        pick = fair.pick(TRAIN_QUEUE)
        assert pick.outcome is FairPickOutcome.PICKED and pick.job_id is not None
        jobs.finish(pick.job_id, "succeeded")
        order.append(pick.job_id)
    return order


def test_a_tenants_searches_and_other_jobs_take_turns(jobs: JobStore, redis_client: redis.Redis) -> None:
    fair = FairQueues(redis_client)
    s1 = queue_jobs(jobs, fair, "alice", 5, flow="job_search1")
    s2 = queue_jobs(jobs, fair, "alice", 5, flow="job_search2")
    own = queue_jobs(jobs, fair, "alice", 1)
    order = drain(fair, jobs)
    assert order[:3] == [s1[0], s2[0], own[0]]
    assert order[3:] == [x for pair in zip(s1[1:], s2[1:], strict=True) for x in pair]


def test_a_tenant_that_was_idle_gets_no_burst_of_credit(jobs: JobStore, redis_client: redis.Redis) -> None:
    fair = FairQueues(redis_client)
    queue_jobs(jobs, fair, "alice", 10)
    drain_n(fair, jobs, 6)  # bob had nothing queued meanwhile
    b = set(queue_jobs(jobs, fair, "bob", 6))
    order = drain(fair, jobs)
    assert ["b" if j in b else "a" for j in order[:6]] in (list("bababa"), list("ababab"))


def test_the_running_cap_skips_a_tenant_and_says_wait_when_only_capped_tenants_have_work(
    jobs: JobStore, redis_client: redis.Redis
) -> None:
    fair = FairQueues(redis_client, cap=1)
    leases = Leases(jobs, stale_s=30, max_attempts=3)
    a = queue_jobs(jobs, fair, "alice", 2)
    b = queue_jobs(jobs, fair, "bob", 1)
    first = fair.pick(TRAIN_QUEUE)
    assert first.job_id == a[0]
    assert fair.pick(TRAIN_QUEUE).job_id == b[0], "a picked job not started yet counts against the cap"
    assert leases.begin(a[0], "w1")[0] is not None
    assert fair.pick(TRAIN_QUEUE).outcome is FairPickOutcome.WAIT
    assert fair.loads(TRAIN_QUEUE)["alice"].queued == 1 and fair.loads(TRAIN_QUEUE)["alice"].running == 1
    jobs.finish(a[0], "succeeded")
    assert fair.pick(TRAIN_QUEUE).job_id == a[1]


def test_cancelled_and_expired_entries_are_dropped_and_never_picked(jobs: JobStore, redis_client: redis.Redis) -> None:
    fair = FairQueues(redis_client, cap=1)
    a = queue_jobs(jobs, fair, "alice", 3)
    assert jobs.request_cancel(a[0])["status"] == "cancelled"
    redis_client.delete(keys.job(a[1]))
    assert drain(fair, jobs) == [a[2]]
    assert not redis_client.exists(keys.fair_flows("alice", TRAIN_QUEUE), keys.fair_tenants(TRAIN_QUEUE))


def test_a_pick_whose_worker_died_before_starting_it_goes_back_to_the_front(
    jobs: JobStore, redis_client: redis.Redis
) -> None:
    fair = FairQueues(redis_client, repair_after_s=0)
    a = queue_jobs(jobs, fair, "alice", 2)
    assert fair.pick(TRAIN_QUEUE).job_id == a[0]  # ... and its worker died here, before begin
    assert fair.pick(TRAIN_QUEUE).job_id == a[0], "the stale pick is repaired first"
    jobs.finish(a[0], "succeeded")
    assert drain(fair, jobs) == [a[1]]


def test_a_resend_of_a_queued_job_does_not_queue_it_twice(jobs: JobStore, redis_client: redis.Redis) -> None:
    fair = FairQueues(redis_client)
    (a,) = queue_jobs(jobs, fair, "alice", 1)
    assert fair.enqueue(TRAIN_QUEUE, "alice", a) is FairEnqueueOutcome.ALREADY_QUEUED
    assert drain(fair, jobs) == [a]


def test_the_train_and_batch_queues_are_scheduled_apart(jobs: JobStore, redis_client: redis.Redis) -> None:
    fair = FairQueues(redis_client)
    t = queue_jobs(jobs, fair, "alice", 1)
    b = queue_jobs(jobs, fair, "alice", 1, queue=BATCH_QUEUE)
    assert drain(fair, jobs, BATCH_QUEUE) == b
    assert drain(fair, jobs) == t


def test_tenant_keys_are_under_the_tenant_namespace() -> None:
    assert keys.fair_flows("acme", "train") == "mlq:t:acme:fair:train:flows"
    assert keys.fair_flow("acme", "train", "jobs") == "mlq:t:acme:fair:train:flow:jobs"
