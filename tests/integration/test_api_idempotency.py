"""One IdempotencyClaim (api/submit.py) for job submissions and predictions: a retry with the same key and body
replays the job, another body is a 422, and a refused request leaves its key free for the corrected one."""

from __future__ import annotations

import redis
from api_support import register_model, train_body, upload
from flask.testing import FlaskClient

from store.inference_queue import queued_requests
from store.settings import Settings

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client
ROW = {"sepal_length": 5.1, "island": "Torgersen"}


def test_a_prediction_retried_with_its_key_is_the_same_job_and_queued_once(
    client: FlaskClient, settings: Settings, redis_url: str
) -> None:
    register_model(settings)
    key = {"Idempotency-Key": "p-1"}
    first = client.post("/v1/models/iris/predict", json={"inputs": [ROW]}, headers=key)
    again = client.post("/v1/models/iris/predict", json={"inputs": [ROW]}, headers=key)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.get_json()["id"] == again.get_json()["id"]
    assert len(queued_requests(redis.Redis.from_url(redis_url))) == 1
    other = client.post("/v1/models/iris/predict", json={"inputs": [ROW, ROW]}, headers=key)
    assert other.status_code == 422 and other.get_json()["code"] == "idempotency_key_reused"


def test_a_refused_prediction_leaves_its_key_free_for_the_fixed_request(
    client: FlaskClient, settings: Settings
) -> None:
    register_model(settings)
    key = {"Idempotency-Key": "p-2"}
    refused = client.post("/v1/models/iris/predict", json={"inputs": [{"island": "Torgersen", "x": 1}]}, headers=key)
    assert refused.status_code == 422
    fixed = client.post("/v1/models/iris/predict", json={"inputs": [ROW]}, headers=key)
    assert fixed.status_code == 202


def test_a_training_retried_with_its_key_is_the_same_job(client: FlaskClient) -> None:
    dataset = upload(client)
    key = {"Idempotency-Key": "t-1"}
    first = client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers=key)
    again = client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers=key)
    assert first.get_json()["id"] == again.get_json()["id"]
    other = client.post("/v1/jobs/train", json=train_body(dataset["id"], model="other"), headers=key)
    assert other.status_code == 422
