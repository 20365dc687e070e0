"""Limits on what a client controls (OWASP API4): each is a setting, and a refusal names the limit and the
setting. Epochs and hidden layer widths (422), rows per predict (413), active jobs per tenant (429 +
Retry-After, a slot given back when a job ends), job submissions per minute (429 + Retry-After)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from api_reliability_support import ALICE, BOB, TOKENS, make_settings, register_model, train_body, upload
from flask.testing import FlaskClient

from api import create_app
from store.jobs import JobStore


def app_client(tmp_path: Path, redis_url: str, **overrides: Any) -> FlaskClient:
    settings = make_settings(tmp_path / "home", redis_url, auth_tokens=TOKENS, **overrides)
    return create_app(settings).test_client()


def test_epochs_above_the_setting_are_refused_naming_it(tmp_path: Path, redis_url: str) -> None:
    client = app_client(tmp_path, redis_url, max_epochs=5)
    ds = upload(client, headers=ALICE)["id"]
    body = train_body(ds, algorithm="mlp", params={"epochs": 6})
    response = client.post("/v1/jobs/train", json=body, headers=ALICE)
    assert response.status_code == 422
    problem = response.get_json()
    assert "MLQ_MAX_EPOCHS" in problem["detail"] and problem["code"] == "limit_exceeded"
    assert problem["errors"][0]["loc"] == ["params", "epochs"]
    ok = client.post("/v1/jobs/train", json=train_body(ds, algorithm="mlp", params={"epochs": 5}), headers=ALICE)
    assert ok.status_code == 202


def test_hidden_layers_wider_than_the_setting_are_refused_naming_it(tmp_path: Path, redis_url: str) -> None:
    client = app_client(tmp_path, redis_url, max_hidden_units=32)
    ds = upload(client, headers=ALICE)["id"]
    body = train_body(ds, algorithm="mlp", params={"hidden_layers": [16, 33]})
    response = client.post("/v1/jobs/train", json=body, headers=ALICE)
    assert response.status_code == 422
    assert "MLQ_MAX_HIDDEN_UNITS" in response.get_json()["detail"]
    assert response.get_json()["errors"][0]["loc"] == ["params", "hidden_layers", 1]
    # The mlp default ([64, 64]) is above this limit too: defaults are checked like given values.
    assert client.post("/v1/jobs/train", json=train_body(ds, algorithm="mlp"), headers=ALICE).status_code == 422


def test_more_rows_per_predict_than_the_setting_is_a_413_naming_it(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path / "home", redis_url, max_batch_rows=3)
    register_model(settings)
    client = create_app(settings).test_client()
    rows = [{"sepal_length": 1.0, "island": "x"}] * 4
    response = client.post("/v1/models/iris/predict", json={"inputs": rows})
    assert response.status_code == 413 and "MLQ_MAX_BATCH_ROWS" in response.get_json()["detail"]


def test_a_tenant_past_its_active_jobs_gets_429_until_one_ends(tmp_path: Path, redis_url: str) -> None:
    client = app_client(tmp_path, redis_url, max_active_jobs=2)
    ds = upload(client, headers=ALICE)["id"]
    jobs = [client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE) for _ in range(2)]
    assert [r.status_code for r in jobs] == [202, 202]
    refused = client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "MLQ_MAX_ACTIVE_JOBS" in refused.get_json()["detail"]
    assert refused.content_type == "application/problem+json"
    # A refused submission created nothing.
    assert len(client.get("/v1/jobs", headers=ALICE).get_json()["items"]) == 2
    # Another tenant has its own slots.
    bob_ds = upload(client, headers=BOB)["id"]
    assert client.post("/v1/jobs/train", json=train_body(bob_ds), headers=BOB).status_code == 202
    # An invalid request is still told what is wrong with it (422), not 429.
    bad = client.post("/v1/jobs/train", json=train_body(ds, algorithm="nope"), headers=ALICE)
    assert bad.status_code == 422
    # A job that ends gives its slot back (the finish script frees it atomically).
    assert client.post(f"/v1/jobs/{jobs[0].get_json()['id']}/cancel", headers=ALICE).status_code == 202
    assert client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE).status_code == 202
    assert client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE).status_code == 429


def test_a_replayed_idempotent_request_does_not_take_a_second_slot(tmp_path: Path, redis_url: str) -> None:
    client = app_client(tmp_path, redis_url, max_active_jobs=1)
    ds = upload(client, headers=ALICE)["id"]
    headers = {**ALICE, "Idempotency-Key": "k-1"}
    first = client.post("/v1/jobs/train", json=train_body(ds), headers=headers)
    again = client.post("/v1/jobs/train", json=train_body(ds), headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.get_json()["id"] == again.get_json()["id"]


def test_a_refused_submission_leaves_its_idempotency_key_free(tmp_path: Path, redis_url: str) -> None:
    client = app_client(tmp_path, redis_url, max_active_jobs=1)
    ds = upload(client, headers=ALICE)["id"]
    first = client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE).get_json()
    headers = {**ALICE, "Idempotency-Key": "k-2"}
    assert client.post("/v1/jobs/train", json=train_body(ds), headers=headers).status_code == 429
    client.post(f"/v1/jobs/{first['id']}/cancel", headers=ALICE)
    assert client.post("/v1/jobs/train", json=train_body(ds), headers=headers).status_code == 202


def test_a_lost_job_record_never_blocks_a_tenant_for_good(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    client = app_client(tmp_path, redis_url, max_active_jobs=1)
    ds = upload(client, headers=ALICE)["id"]
    job = client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE).get_json()
    assert client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE).status_code == 429
    redis_client.delete(JobStore.key(job["id"]))  # e.g. expired, or lost with a Redis without persistence
    assert client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE).status_code == 202


def test_the_active_counter_follows_every_final_transition(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client)
    ids = []
    for _ in range(3):
        job = store.create("t", "train", "m", {})
        assert store.admit("t", job["id"], 3)
        ids.append(job["id"])
    assert not store.admit("t", "job_" + "0" * 26, 3)
    store.finish(ids[0], "succeeded", result={})
    store.request_cancel(ids[1])  # queued → cancelled at once
    assert store.mark_running(ids[2], "w1")
    store.finish(ids[2], "failed", error={"type": "x", "message": "y"})
    assert store.active_count("t") == 0


def wait_for_fresh_window(margin_s: float = 3.0) -> None:
    """Sleep past a minute boundary that is about to come, so the whole test runs in one window."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.05)


def test_submissions_past_the_per_minute_rate_limit_get_429_with_retry_after(tmp_path: Path, redis_url: str) -> None:
    client = app_client(tmp_path, redis_url, rate_limit_per_minute=3)
    ds = upload(client, headers=ALICE)["id"]
    bob_ds = upload(client, headers=BOB)["id"]
    wait_for_fresh_window()
    codes = [client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE).status_code for _ in range(3)]
    refused = client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE)
    assert codes == [202, 202, 202]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    assert "MLQ_RATE_LIMIT_PER_MINUTE" in refused.get_json()["detail"]
    assert client.post("/v1/jobs/train", json=train_body(bob_ds), headers=BOB).status_code == 202
    # Reading is not rate limited.
    assert client.get("/v1/jobs", headers=ALICE).status_code == 200


@pytest.mark.parametrize("overrides", [{}, {"max_active_jobs": 1000, "rate_limit_per_minute": 0}])
def test_the_defaults_let_ordinary_use_through(tmp_path: Path, redis_url: str, overrides: dict[str, Any]) -> None:
    client = app_client(tmp_path, redis_url, **overrides)
    ds = upload(client, headers=ALICE)["id"]
    codes = {client.post("/v1/jobs/train", json=train_body(ds), headers=ALICE).status_code for _ in range(5)}
    assert codes == {202}
