"""Per-model serving policies, deadlines and the queue cap, end to end: the Flask app, real Redis, one real
inference worker. The worker holds batches up to 100 ms so that concurrent requests meet; assertions read the
worker's counters and the job records, never the clock.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from polling import wait_until
from sklearn.datasets import load_iris

from api import create_app
from store.contract import INFERENCE_QUEUE, JobType, PredictRequest
from store.ids import new_id
from store.inference_queue import enqueue_in, stats
from store.jobs import JobStore, now_rfc3339
from store.settings import Settings
from training.pipeline import train_model
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
TENANT = "default"
WAIT = {"Prefer": "wait=30"}
ENV = {"MLQ_BATCH_MAX_DELAY_MS": "100", "MLQ_BATCH_MAX_SIZE": "64"}
IRIS = ["sl", "sw", "pl", "pw"]


@pytest.fixture(scope="module")
def rows(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """iris-a v1 (production) and iris-b v1: the same logistic regression under two names."""
    registry = ModelRegistry(mlq_settings.models_dir, secret_key=mlq_settings.secret_key)
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame.columns = IRIS
    frame["species"] = iris.target_names[iris.target]
    path = tmp_path_factory.mktemp("serving") / "iris.csv"
    frame.to_csv(path, index=False)
    for name in ("iris-a", "iris-b"):
        train_model(
            data_path=path, target="species", algorithm="logistic_regression", model_name=name, registry=registry
        )
    registry.set_alias(TENANT, "iris-a", "production", 1)
    records: list[dict[str, Any]] = frame[IRIS].to_dict("records")
    return records


@pytest.fixture(scope="module")
def worker(start_worker: Any, rows: Any) -> Any:
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        return start_worker([INFERENCE_QUEUE])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def app(mlq_settings: Settings) -> FlaskClient:
    return create_app(mlq_settings).test_client()


@pytest.fixture(scope="module")
def store(mlq_settings: Settings) -> Iterator[JobStore]:
    client = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    yield JobStore(client)
    client.close()


@contextmanager
def paused(worker: Any) -> Iterator[None]:
    """The worker's processes stopped (SIGSTOP to its process group): requests stay queued meanwhile."""
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)


def post_all(app: FlaskClient, model: str, bodies: list[dict[str, Any]], headers: dict[str, str]) -> list[Any]:
    answers: list[Any] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        barrier.wait()
        answers[i] = app.post(f"/v1/models/{model}/predict", json=bodies[i], headers=headers)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return answers


def counted(store: JobStore, before: dict[str, int], rows: int) -> dict[str, int]:
    """The worker's counters once they hold `rows` more rows: a batch's counters are written just after its
    answers are pushed (same round trip), so a client may read them a moment before they are."""

    def enough() -> dict[str, int]:
        now = stats(store.redis)
        return now if now["rows"] - before["rows"] >= rows else {}

    found: dict[str, int] = wait_until(enough, 30, what="the batch counters")
    return found


def test_serving_settings_are_validated_stored_per_alias_and_shown_with_the_model(app: FlaskClient, rows: Any) -> None:
    assert app.put("/v1/models/nope/serving", json={"max_batch_size": 4}).status_code == 404
    assert app.put("/v1/models/iris-a/serving", json={"alias": "staging", "max_batch_size": 4}).status_code == 404
    assert app.put("/v1/models/iris-a/serving", json={"max_batch_size": 0}).status_code == 422
    too_big = app.put("/v1/models/iris-a/serving", json={"max_batch_size": 5000})
    assert too_big.status_code == 422 and "MLQ_MAX_BATCH_ROWS" in too_big.get_json()["detail"]
    assert app.put("/v1/models/iris-a/serving", json={"max_queue_delay_ms": -1}).status_code == 422
    assert app.put("/v1/models/iris-a/serving", json={"batch": 1}).status_code == 422
    answer = app.put("/v1/models/iris-a/serving", json={"max_batch_size": 8, "max_queue_delay_ms": 1})
    assert answer.status_code == 200, answer.get_json()
    answer = app.put("/v1/models/iris-a/serving", json={"alias": "production", "max_batch_size": 16})
    view = answer.get_json()
    assert view["model"] == {"max_batch_size": 8, "max_queue_delay_ms": 1}
    assert view["effective"]["model"] == {"max_batch_size": 8, "max_queue_delay_ms": 1.0, "max_queued": 0}
    assert view["effective"]["production"] == {"max_batch_size": 16, "max_queue_delay_ms": 1.0, "max_queued": 0}
    assert view["defaults"] == {"max_batch_size": 64, "max_queue_delay_ms": 2.0, "max_queued": 0}
    assert app.get("/v1/models/iris-a").get_json()["serving"] == view
    reset = app.put("/v1/models/iris-a/serving", json={"reset": True}).get_json()
    assert reset["model"] == {} and reset["effective"]["model"] == reset["defaults"]
    app.put("/v1/models/iris-a/serving", json={"alias": "production", "reset": True})


def test_a_models_max_batch_size_bounds_its_forward_passes_while_another_model_batches_freely(
    worker: Any, app: FlaskClient, store: JobStore, rows: list[dict[str, Any]]
) -> None:
    assert app.put("/v1/models/iris-b/serving", json={"max_batch_size": 2}).status_code == 200
    before = stats(store.redis)
    answers = post_all(app, "iris-b", [{"inputs": [row]} for row in rows[:16]], WAIT)
    after = counted(store, before, 16)
    assert [(a.status_code, a.get_json()["status"]) for a in answers] == [(200, "succeeded")] * 16, answers[
        0
    ].get_json()
    assert after["rows"] - before["rows"] == 16
    assert after["forward_passes"] - before["forward_passes"] >= 8  # never more than 2 rows in one pass
    before = after
    answers = post_all(app, "iris-a", [{"inputs": [row], "priority": "high"} for row in rows[:16]], WAIT)
    after = counted(store, before, 16)
    assert [a.status_code for a in answers] == [200] * 16
    assert after["forward_passes"] - before["forward_passes"] < 16  # the default policy batches them


def test_a_request_past_its_deadline_is_never_computed_and_ends_expired(
    worker: Any, app: FlaskClient, store: JobStore, rows: list[dict[str, Any]]
) -> None:
    _, now_ms = now_rfc3339()
    late = PredictRequest(new_id("job"), TENANT, "iris-a", 1, [rows[0]], deadline_ms=now_ms - 1)
    timely = PredictRequest(new_id("job"), TENANT, "iris-a", 1, [rows[1]], deadline_ms=now_ms + 60_000)
    before = stats(store.redis)
    with store.redis.pipeline(transaction=True) as pipe:
        for request in (late, timely):
            store.create(TENANT, JobType.PREDICT.value, "iris-a", {}, job_id=request.job_id, pipe=pipe)
            enqueue_in(pipe, request.encode())
        pipe.execute()
    expired, done = store.wait(late.job_id, 60), store.wait(timely.job_id, 60)
    assert done is not None and done["status"] == "succeeded"
    assert expired is not None and expired["status"] == "expired" and expired["result"] is None
    assert (expired["error"] or {}).get("type") == "deadline_exceeded" and expired["started_at"] is None
    after = counted(store, before, 1)
    assert after["expired"] - before["expired"] == 1 and after["rows"] - before["rows"] == 1
    job = app.get(f"/v1/jobs/{late.job_id}").get_json()
    assert job["status"] == "expired"
    # Through the API: a deadline the answer cannot meet is a 504 at the deadline, and the job ends expired.
    with paused(worker):
        answer = app.post(
            "/v1/models/iris-a/predict", json={"inputs": [rows[2]]}, headers={"X-Request-Timeout-Ms": "50"}
        )
        assert answer.status_code == 504 and answer.get_json()["code"] == "deadline_exceeded"
        # A Prefer: wait shorter than the deadline ends first: the usual 202, the job keeps its deadline.
        headers = {"X-Request-Timeout-Ms": "20000", "Prefer": "wait=1"}
        shorter = app.post("/v1/models/iris-a/predict", json={"inputs": [rows[3]]}, headers=headers)
        assert shorter.status_code == 202, shorter.get_json()
    job_url = answer.headers["Location"]
    assert wait_until(lambda: app.get(job_url).get_json()["status"] == "expired", 60, what="the job expired")
    for bad in ("0", "-5", "soon"):
        refused = app.post(
            "/v1/models/iris-a/predict", json={"inputs": [rows[2]]}, headers={"X-Request-Timeout-Ms": bad}
        )
        assert refused.status_code == 422 and "X-Request-Timeout-Ms" in refused.get_json()["detail"]
    # With time to spare, the header changes nothing but the wait.
    fine = app.post("/v1/models/iris-a/predict", json={"inputs": [rows[3]]}, headers={"X-Request-Timeout-Ms": "20000"})
    assert fine.status_code == 200 and fine.get_json()["status"] == "succeeded"
    oip = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": list(rows[0].values())}]}
    with paused(worker):
        late_oip = app.post("/v2/models/iris-a/infer", json={**oip, "parameters": {"timeout": 50_000}})
    assert late_oip.status_code == 504 and late_oip.get_json()["code"] == "deadline_exceeded"
    assert app.post("/v2/models/iris-a/infer", json={**oip, "parameters": {"timeout": 0}}).status_code == 400


def test_a_model_at_its_queue_cap_is_refused_at_once_with_retry_after(
    worker: Any, app: FlaskClient, store: JobStore, rows: list[dict[str, Any]]
) -> None:
    assert app.put("/v1/models/iris-b/serving", json={"max_queued": 2}).status_code == 200
    with paused(worker):
        queued = [app.post("/v1/models/iris-b/predict", json={"inputs": [rows[i]]}) for i in range(2)]
        refused = app.post("/v1/models/iris-b/predict", json={"inputs": [rows[2]]})
        other = app.post("/v1/models/iris-a/predict", json={"inputs": [rows[2]]})  # its own queue: no cap
    assert [q.status_code for q in queued] == [202, 202] and other.status_code == 202
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.get_json()["code"] == "queue_full" and "max_queued" in refused.get_json()["detail"]
    for q in queued:
        assert store.wait(q.get_json()["id"], 60)["status"] == "succeeded"  # type: ignore[index]
    # Answered, they no longer count: the model takes requests again.
    again = app.post("/v1/models/iris-b/predict", json={"inputs": [rows[2]]}, headers=WAIT)
    assert again.status_code == 200 and again.get_json()["status"] == "succeeded"
    app.put("/v1/models/iris-b/serving", json={"reset": True})
