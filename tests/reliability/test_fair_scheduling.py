"""Fair scheduling with real workers: one tenant's backlog does not delay another's job by more than a slot or two,
MLQ_MAX_RUNNING_PER_TENANT holds with two workers, and queued jobs behind the fair picker still cancel."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from job_harness import iris_csv
from polling import wait_until
from reliability_support import WorkerFleet

from api import create_app
from store.jobs import JobStore
from store.settings import Settings

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def client(chaos_settings: Settings) -> Iterator[FlaskClient]:
    settings = dataclasses.replace(chaos_settings, auth_tokens=TOKENS)
    yield create_app(settings).test_client()


@pytest.fixture(scope="module")
def datasets(client: FlaskClient) -> dict[str, str]:
    ids = {}
    for tenant, headers in (("alice", ALICE), ("bob", BOB)):
        response = client.post("/v1/datasets?name=iris", data=iris_csv(), content_type="text/csv", headers=headers)
        assert response.status_code == 201, response.get_json()
        ids[tenant] = response.get_json()["id"]
    return ids


@pytest.fixture(scope="module")
def jobs(chaos_settings: Settings) -> JobStore:
    import redis

    return JobStore(redis.Redis.from_url(chaos_settings.redis_url, decode_responses=True), ttl_s=3600)


def train(client: FlaskClient, headers: dict[str, str], dataset: str) -> str:
    body = {"model": "iris", "dataset": dataset, "target": "species", "algorithm": "logistic_regression"}
    response = client.post("/v1/jobs/train", json=body, headers=headers)
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["id"]
    return job_id


def record(jobs: JobStore, job_id: str) -> dict[str, Any]:
    job = jobs.get(job_id)
    assert job is not None
    return dict(job)


def wait_final(jobs: JobStore, ids: list[str], timeout_s: float = 240.0) -> None:
    wait_until(lambda: all(record(jobs, j)["status"] in FINAL for j in ids), timeout_s, what=f"{len(ids)} jobs ended")


def test_a_tenant_queued_behind_another_ones_twenty_trainings_starts_within_two_of_them(
    client: FlaskClient, datasets: dict[str, str], jobs: JobStore, fleet: WorkerFleet
) -> None:
    a = [train(client, ALICE, datasets["alice"]) for _ in range(20)]
    b = train(client, BOB, datasets["bob"])
    metrics = client.get("/metrics").get_data(as_text=True)
    queued = re.findall(r'mlq_tenant_jobs\{queue="train",state="queued",tenant="(t_\w+)"\} (\d+)', metrics)
    assert sorted(int(n) for _, n in queued) == [1, 20], metrics  # by pseudonym: /metrics names no tenant
    assert "alice" not in metrics and "bob" not in metrics
    fleet.start(["train"])  # one worker, one slot
    wait_until(lambda: record(jobs, b)["status"] in FINAL, 240.0, what="bob's training ended")
    assert record(jobs, b)["status"] == "succeeded"
    started_b = record(jobs, b)["started_at"]
    before = [j for j in a if record(jobs, j)["started_at"] and record(jobs, j)["started_at"] < started_b]
    assert len(before) <= 2, f"{len(before)} of alice's trainings started before bob's"
    # The rest of alice's backlog is still queued behind the picker, and cancels like any queued job.
    waiting = [j for j in a if record(jobs, j)["status"] == "queued"]
    assert len(waiting) >= 10
    at_once = []  # cancelled while still queued (the others had just started: their worker stops them)
    for job_id in waiting:
        response = client.post(f"/v1/jobs/{job_id}/cancel", headers=ALICE)
        assert response.status_code in (200, 202)
        if response.get_json()["status"] == "cancelled":
            at_once.append(job_id)
    assert len(at_once) >= 8
    wait_final(jobs, a)
    ended = {j: (record(jobs, j)["status"], record(jobs, j)["started_at"]) for j in at_once}
    assert all(status == "cancelled" and not started for status, started in ended.values()), ended
    wait_until(lambda: jobs.redis.llen("train") == 0, 120.0, what="the cancelled jobs' messages were consumed")


def test_with_a_cap_of_one_a_tenant_never_runs_two_jobs_at_once_on_two_workers(
    client: FlaskClient, datasets: dict[str, str], jobs: JobStore, fleet: WorkerFleet
) -> None:
    for worker in list(fleet.started):
        fleet.stop(worker)
    env = {"MLQ_MAX_RUNNING_PER_TENANT": "1"}
    first = fleet.start(["train"], env=env, wait=False)
    second = fleet.start(["train"], env=env, wait=False)
    fleet.wait_ready(first)
    fleet.wait_ready(second)
    a = [train(client, ALICE, datasets["alice"]) for _ in range(4)]
    b = [train(client, BOB, datasets["bob"]) for _ in range(2)]
    # Sample what runs while they run: alice never has two running.
    most = 0

    def done() -> bool:
        nonlocal most
        statuses = [record(jobs, j)["status"] for j in a]
        most = max(most, statuses.count("running"))
        return all(s in FINAL for s in statuses + [record(jobs, j)["status"] for j in b])

    wait_until(done, 300.0, what="every job ended", interval_s=0.05)
    assert most <= 1, f"alice had {most} jobs running at once"
    assert all(record(jobs, j)["status"] == "succeeded" for j in a + b)
    # The records agree: alice's attempts never overlapped (each started after the previous one finished).
    spans = sorted((record(jobs, j)["started_at"], record(jobs, j)["finished_at"]) for j in a)
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False)), spans
