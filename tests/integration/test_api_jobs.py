"""Reading, listing and cancelling jobs over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, cast

import redis
from api_support import train_body, upload
from flask.testing import FlaskClient

from store.jobs import JobStore

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client


def _submit(client: FlaskClient, dataset_id: str, model: str = "iris") -> dict[str, Any]:
    response = client.post("/v1/jobs/train", json=train_body(dataset_id, model=model))
    assert response.status_code == 202
    job: dict[str, Any] = response.get_json()
    return job


def test_jobs_are_listed_newest_first_page_by_page(client: FlaskClient) -> None:
    dataset = upload(client)
    ids = [_submit(client, dataset["id"])["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_jobs_are_filtered_by_status_type_and_model(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    a = _submit(client, dataset["id"], model="a")
    b = _submit(client, dataset["id"], model="b")
    JobStore(redis.Redis.from_url(redis_url)).finish(a["id"], "failed", error={"type": "x", "message": "y"})
    assert [j["id"] for j in client.get("/v1/jobs?status=failed").get_json()["items"]] == [a["id"]]
    assert [j["id"] for j in client.get("/v1/jobs?model=b").get_json()["items"]] == [b["id"]]
    assert client.get("/v1/jobs?type=predict").get_json()["items"] == []
    assert client.get("/v1/jobs?status=exploded").status_code == 422


def test_an_invalid_cursor_or_limit_is_refused(client: FlaskClient) -> None:
    assert client.get("/v1/jobs?cursor=not-a-cursor").status_code == 400
    assert client.get("/v1/jobs?limit=500").status_code == 422


def test_an_unknown_job_is_a_404_problem(client: FlaskClient) -> None:
    for job_id in ("job_00000000000000000000000000", "nonsense", "job_..%2F"):
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 404
        assert response.content_type == "application/problem+json"
    assert client.post("/v1/jobs/job_00000000000000000000000000/cancel").status_code == 404


def test_cancelling_a_queued_job_ends_it_at_once_and_a_second_cancel_is_a_409(
    client: FlaskClient, redis_url: str
) -> None:
    dataset = upload(client)
    job = _submit(client, dataset["id"])
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.get_json()["status"] == "cancelled"
    assert response.get_json()["finished_at"] is not None
    store = JobStore(redis.Redis.from_url(redis_url))
    assert store.mark_running(job["id"], "late-worker") is False  # the queued message will be skipped
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert "cancelled" in again.get_json()["detail"]


def test_cancelling_a_running_job_sets_the_flag_the_worker_checks(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    job = _submit(client, dataset["id"])
    store = JobStore(redis.Redis.from_url(redis_url))
    assert store.mark_running(job["id"], "w1")
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.get_json()["status"] == "running"
    assert store.cancel_requested(job["id"])


def test_the_tenant_stream_starts_when_it_is_opened_not_when_its_body_is_first_read(
    client: FlaskClient, redis_url: str
) -> None:
    """The dashboard opens /v1/events, then lists the jobs: a change between its list and the moment the server's
    body generator first runs (a slow subscription confirmation) must still arrive. CI once lost a cancellation so."""
    job = _submit(client, upload(client)["id"])
    response = client.get("/v1/events", buffered=False)  # the view ran; the body has not been read yet
    assert response.status_code == 200
    store = JobStore(redis.Redis.from_url(redis_url, decode_responses=True))
    store.request_cancel(job["id"])  # a queued job: it ends `cancelled` at once
    body = iter(cast(Iterable[bytes], response.response))
    text, deadline = "", time.monotonic() + 10  # a keep-alive comes every 15 s: this fails within ~15 s
    while "cancelled" not in text and time.monotonic() < deadline:
        text += next(body).decode()
    response.close()
    assert f'"id":"{job["id"]}"' in text.replace(" ", "") and '"event":"cancelled"' in text.replace(" ", "")
