"""Service routes: health, readiness with and without workers, metrics, the OpenAPI document, Redis down."""

from __future__ import annotations

from pathlib import Path

import redis
from api_support import make_settings, train_body, upload
from flask.testing import FlaskClient

from api import create_app
from store.jobs import JobStore
from store.liveness import WorkerLiveness

CONTRACT_ROUTES = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/datasets"),
    ("get", "/v1/datasets"),
    ("get", "/v1/datasets/{dataset_id}"),
    ("delete", "/v1/datasets/{dataset_id}"),
    ("post", "/v1/jobs/train"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{job_id}"),
    ("post", "/v1/jobs/{job_id}/cancel"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{name}"),
    ("get", "/v1/models/{name}/versions/{version}"),
    ("delete", "/v1/models/{name}/versions/{version}"),
    ("get", "/v1/models/{name}/versions/{version}/artifact"),
    ("get", "/v1/models/{name}/versions/{version}/drift"),
    ("put", "/v1/models/{name}/aliases/{alias}"),
    ("delete", "/v1/models/{name}/aliases/{alias}"),
    ("post", "/v1/models/{name}/predict"),
}

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client


def test_healthz_is_ok(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_is_503_without_workers_and_200_once_both_queues_have_one(client: FlaskClient, redis_url: str) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "redis": "ok",
        "queues": {
            "train": {"workers": 0, "depth": 0},
            "inference": {"workers": 0, "depth": 0},
            "batch": {"workers": 0, "depth": 0},  # listed (make run starts one), not required
        },
    }
    liveness = WorkerLiveness(redis.Redis.from_url(redis_url))
    liveness.beat("train-worker", ["train"], ttl_s=30)
    assert client.get("/readyz").status_code == 503  # inference still has nobody
    liveness.beat("infer-worker", ["inference"], ttl_s=30)
    ready = client.get("/readyz")
    assert ready.status_code == 200  # without a batch worker
    assert ready.get_json()["queues"]["train"]["workers"] == 1
    liveness.beat("batch-worker", ["batch"], ttl_s=30)
    assert client.get("/readyz").get_json()["queues"]["batch"]["workers"] == 1


def test_readyz_reports_queue_depth(client: FlaskClient) -> None:
    dataset = upload(client)
    client.post("/v1/jobs/train", json=train_body(dataset["id"]))
    assert client.get("/readyz").get_json()["queues"]["train"]["depth"] == 1


def test_metrics_count_jobs_by_type_and_status_and_their_durations(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    job = client.post("/v1/jobs/train", json=train_body(dataset["id"])).get_json()
    store = JobStore(redis.Redis.from_url(redis_url))
    store.mark_running(job["id"], "w")
    store.finish(job["id"], "succeeded", result={})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'mlq_jobs_total{status="queued",type="train"} 1.0' in text
    assert 'mlq_jobs_total{status="succeeded",type="train"} 1.0' in text
    assert 'mlq_job_duration_seconds_count{type="train"} 1.0' in text
    assert 'mlq_queue_depth{queue="train"} 1.0' in text
    assert "mlq_redis_up 1.0" in text


def test_the_openapi_document_is_3_1_and_lists_every_route_of_the_contract(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    routes = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert routes >= CONTRACT_ROUTES
    train = doc["paths"]["/v1/jobs/train"]["post"]
    assert "requestBody" in train and "202" in train["responses"]


def test_redis_down_is_a_503_problem_not_a_hang_or_a_500(tmp_path: Path) -> None:
    down = create_app(make_settings(tmp_path, "redis://127.0.0.1:1/0")).test_client()
    response = down.get("/v1/jobs")
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"]
    ready = down.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["redis"].startswith("error")
    assert down.get("/healthz").status_code == 200


def test_unknown_routes_and_methods_are_problems(client: FlaskClient) -> None:
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/nothing").content_type == "application/problem+json"
    response = client.put("/v1/jobs")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
