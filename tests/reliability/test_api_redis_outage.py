"""Redis down and back, seen from the API: every route that needs Redis answers 503 problem+json with
Retry-After within 2 s (no hang, no 500), /readyz says 503, and when Redis returns the same app (no restart)
serves again: no broken pooled connection, no broken Celery producer. A job whose message could not be
published is marked failed, never left queued."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from api_reliability_support import make_settings, register_model, train_body, upload
from flask.testing import FlaskClient
from kombu.exceptions import OperationalError

from api import create_app, publisher
from store.celery_config import make_celery
from store.settings import Settings

# A refused connection answers in milliseconds; what this guards against is a request that hangs on a Redis that
# is away (retries, a socket without a timeout): tens of seconds. Not tighter: a shared 2-core CI machine stalls.
DEADLINE_S = 5.0
PREDICT = {"inputs": [{"sepal_length": 1.0, "island": "x"}]}


@pytest.fixture
def outage(private_redis: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    private_redis.client().flushall()
    settings = make_settings(tmp_path / "home", private_redis.url)
    register_model(settings)
    client = create_app(settings).test_client()
    dataset = upload(client)["id"]
    yield {"client": client, "redis": private_redis, "dataset": dataset, "settings": settings}
    if not private_redis.running:
        private_redis.start()


def timed(client: FlaskClient, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[Any, float]:
    start = time.monotonic()
    response = client.open(path, method=method, json=body)
    return response, time.monotonic() - start


def test_with_redis_down_every_route_that_needs_it_answers_503_fast_and_recovers_by_itself(
    outage: dict[str, Any],
) -> None:
    client, server, ds = outage["client"], outage["redis"], outage["dataset"]
    job = client.post("/v1/jobs/train", json=train_body(ds)).get_json()
    for cycle in range(2):  # twice: the second outage must behave like the first (nothing stays broken)
        server.stop()
        routes = [
            ("POST", "/v1/jobs/train", train_body(ds)),
            ("POST", "/v1/models/iris/predict", PREDICT),
            ("GET", f"/v1/jobs/{job['id']}", None),
            ("GET", "/v1/jobs", None),
            ("POST", f"/v1/jobs/{job['id']}/cancel", None),
            ("GET", f"/v1/jobs/{job['id']}?wait=5", None),
        ]
        for method, path, body in routes:
            response, elapsed = timed(client, method, path, body)
            assert response.status_code == 503, (cycle, method, path, response.get_json())
            assert response.content_type == "application/problem+json"
            assert int(response.headers["Retry-After"]) >= 1
            assert elapsed < DEADLINE_S, (method, path, elapsed)
        ready, elapsed = timed(client, "GET", "/readyz")
        assert ready.status_code == 503 and ready.get_json()["redis"].startswith("error")
        assert elapsed < DEADLINE_S
        assert client.get("/healthz").status_code == 200  # a Redis blip must not get the API restarted
        assert "mlq_redis_up 0.0" in client.get("/metrics").get_data(as_text=True)
        # Uploads need only the artifact store: they keep working (and never hang) while Redis is away.
        response, elapsed = timed(client, "POST", "/v1/datasets?name=during-outage", None)
        assert response.status_code in (415, 201, 503) and elapsed < DEADLINE_S

        server.start()
        accepted = client.post("/v1/jobs/train", json=train_body(ds))
        assert accepted.status_code == 202, (cycle, accepted.get_json())
        assert client.get(f"/v1/jobs/{accepted.get_json()['id']}").status_code == 200
        assert client.post("/v1/models/iris/predict", json=PREDICT).status_code == 202
        # The training message really reached the queue of the restarted Redis (no stale producer).
        assert server.client().llen("train") >= 1
        assert client.get("/v1/jobs").status_code == 200
        assert client.get("/readyz").get_json()["redis"] == "ok"
        job = accepted.get_json()


def test_a_job_whose_message_cannot_be_published_is_marked_failed_and_frees_its_slot(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(tmp_path / "home", redis_url, max_active_jobs=1)
    app = create_app(settings)
    client = app.test_client()
    ds = upload(client)["id"]
    # The job store answers, the broker does not: the publish fails after the record was written.
    svc = app.extensions["mlq"]
    app.extensions["mlq"] = dataclasses.replace(
        svc, celery=publisher(make_celery(Settings(redis_url="redis://127.0.0.1:1/0")))
    )
    response, elapsed = timed(client, "POST", "/v1/jobs/train", train_body(ds))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert elapsed < DEADLINE_S
    (job,) = client.get("/v1/jobs").get_json()["items"]
    assert job["status"] == "failed" and job["error"]["type"] == "enqueue_failed"
    assert redis_client.llen("train") == 0
    # The failed job holds no active slot: with the broker back, the next submission is accepted.
    app.extensions["mlq"] = svc
    assert client.post("/v1/jobs/train", json=train_body(ds)).status_code == 202


def test_publishing_to_a_redis_that_is_down_fails_fast_instead_of_blocking(tmp_path: Path) -> None:
    celery = publisher(make_celery(Settings(redis_url="redis://127.0.0.1:1/0", home=tmp_path)))
    start = time.monotonic()
    with pytest.raises(OperationalError):
        celery.send_task("mlqueue.train", args=[{}], queue="train", ignore_result=True)
    assert time.monotonic() - start < DEADLINE_S
