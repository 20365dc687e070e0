"""Online inference batching: a real inference worker process, real Redis, requests through the Flask app.

The worker runs with a generous batch delay (100 ms) so that concurrent requests share forward passes however
slow this machine is; the assertions read the worker's batch counters in Redis, never the clock.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from flask.testing import FlaskClient
from sklearn.datasets import load_breast_cancer, load_iris

from api import create_app
from store.contract import INFERENCE_QUEUE, JobType, PredictRequest
from store.ids import new_id
from store.inference_queue import FIELD, GROUP, STREAM, enqueue_in, stats
from store.jobs import JobStore
from store.liveness import WorkerLiveness
from store.settings import Settings
from training.pipeline import train_model
from training.predictors import load_predictor
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
TENANT = "default"
WAIT = {"Prefer": "wait=30"}
BATCH_ENV = {"MLQ_BATCH_MAX_DELAY_MS": "100", "MLQ_BATCH_MAX_SIZE": "64", "MLQ_INFERENCE_CLAIM_IDLE_S": "1"}


def _csv(frame: pd.DataFrame, path: Any) -> Any:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def models(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """bc-mlp v1 and v2 (a tiny torch MLP on breast_cancer, two seeds) and iris-lr v1 (scikit-learn)."""
    tmp = tmp_path_factory.mktemp("batching-data")
    registry = ModelRegistry(mlq_settings.models_dir, secret_key=mlq_settings.secret_key)
    bc = load_breast_cancer(as_frame=True)
    bc_frame = bc.frame.drop(columns="target").iloc[:, :8]
    bc_frame.columns = [f"f{i}" for i in range(8)]
    bc_frame["diagnosis"] = np.where(bc.target == 0, "malignant", "benign")
    bc_path = _csv(bc_frame, tmp / "bc.csv")
    for seed in (0, 1):
        train_model(
            data_path=bc_path,
            target="diagnosis",
            algorithm="mlp",
            model_name="bc-mlp",
            registry=registry,
            params={"epochs": 3, "hidden_layers": [16], "batch_size": 64, "seed": seed},
        )
    iris = load_iris(as_frame=True)
    iris_frame = iris.frame.drop(columns="target")
    iris_frame.columns = ["sl", "sw", "pl", "pw"]
    iris_frame["species"] = iris.target_names[iris.target]
    train_model(
        data_path=_csv(iris_frame, tmp / "iris.csv"),
        target="species",
        algorithm="logistic_regression",
        model_name="iris-lr",
        registry=registry,
    )
    return {
        "registry": registry,
        "bc_rows": bc_frame.drop(columns="diagnosis").to_dict("records"),
        "iris_rows": iris_frame.drop(columns="species").to_dict("records"),
    }


def start_batching_worker(start_worker: Any) -> Any:
    """An inference worker with BATCH_ENV (the conftest's start_worker passes os.environ on)."""
    saved = {k: os.environ.get(k) for k in BATCH_ENV}
    os.environ.update(BATCH_ENV)
    try:
        return start_worker([INFERENCE_QUEUE])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def worker(start_worker: Any, models: dict[str, Any]) -> Any:
    return start_batching_worker(start_worker)


@pytest.fixture(scope="module")
def app_client(mlq_settings: Settings) -> FlaskClient:
    return create_app(mlq_settings).test_client()


@pytest.fixture(scope="module")
def store(mlq_settings: Settings) -> Iterator[JobStore]:
    client = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    yield JobStore(client)
    client.close()


def post_all(client: FlaskClient, bodies: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """POST every (model, body) at once from its own thread, each waiting for its answer."""
    answers: list[Any] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def send(i: int, model: str, body: dict[str, Any]) -> None:
        barrier.wait()
        answers[i] = client.post(f"/v1/models/{model}/predict", json=body, headers=WAIT)

    threads = [threading.Thread(target=send, args=(i, m, b)) for i, (m, b) in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return answers


def expected(registry: ModelRegistry, model: str, version: int, rows: list[Any], post: dict[str, Any]) -> Any:
    return load_predictor(registry, TENANT, model, version).predict(rows, post or None)


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]], tolerance: float = 0.0) -> None:
    """Same rows, labels and probabilities (float32 batches may differ from single rows in the last digit)."""
    assert [(p["row"], p.get("label")) for p in got] == [(p["row"], p.get("label")) for p in want]
    for g, w in zip(got, want, strict=True):
        assert set(g.get("proba", {})) == set(w.get("proba", {}))
        for label, value in w.get("proba", {}).items():
            assert abs(g["proba"][label] - value) <= tolerance, (g, w)


def test_sixty_four_concurrent_requests_share_a_few_forward_passes_and_answer_like_one_by_one(
    worker: Any, app_client: FlaskClient, store: JobStore, models: dict[str, Any]
) -> None:
    rows = models["bc_rows"][:64]
    options = [{}, {"output": "label"}, {"output": "proba", "top_k": 1}, {"threshold": 0.9}, {"sort": "desc"}]
    before = stats(store.redis)
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("bc-mlp", {"version": 1, "inputs": [row], "postprocess": options[i % len(options)]})
        for i, row in enumerate(rows)
    ]
    answers = post_all(app_client, bodies)
    after = stats(store.redis)
    assert [a.status_code for a in answers] == [200] * 64, [a.get_json() for a in answers if a.status_code != 200]
    passes = after["forward_passes"] - before["forward_passes"]
    assert after["rows"] - before["rows"] == 64
    assert 1 <= passes < 64 / 4, (before, after)
    for (_, body), response in zip(bodies, answers, strict=True):
        job = response.get_json()
        assert job["status"] == "succeeded" and job["result"]["version"] == 1, job
        want = expected(models["registry"], "bc-mlp", 1, body["inputs"], body["postprocess"])
        assert_same(job["result"]["predictions"], want, tolerance=2e-6)
        # The record behind it reads the same through GET.
        again = app_client.get(f"/v1/jobs/{job['id']}")
        assert again.status_code == 200 and again.get_json()["result"] == job["result"]
        assert again.get_json()["attempts"] == 1 and again.get_json()["started_at"] is not None


def test_a_burst_for_two_models_and_two_versions_is_answered_by_each_ones_own_model(
    worker: Any, app_client: FlaskClient, models: dict[str, Any]
) -> None:
    bc, iris = models["bc_rows"], models["iris_rows"]
    bodies = []
    for i in range(12):
        bodies.append(("bc-mlp", {"version": 1 + i % 2, "inputs": bc[i : i + 2]}))
        bodies.append(("iris-lr", {"inputs": [iris[i * 10]], "postprocess": {"top_k": 2}}))
    answers = post_all(app_client, bodies)
    for (model, body), response in zip(bodies, answers, strict=True):
        job = response.get_json()
        assert response.status_code == 200 and job["status"] == "succeeded", job
        version = body.get("version", 1)
        assert (job["result"]["model"], job["result"]["version"]) == (model, version)
        want = expected(models["registry"], model, version, body["inputs"], body.get("postprocess", {}))
        # Features are float32 after preprocessing: a batch may differ from one row in the 6th digit.
        assert_same(job["result"]["predictions"], want, tolerance=2e-6)


def test_a_request_with_a_bad_row_fails_alone_and_the_rest_of_its_batch_succeeds(
    worker: Any, app_client: FlaskClient, store: JobStore, models: dict[str, Any]
) -> None:
    bad_row = dict(models["bc_rows"][0], f3=10**400)  # the API refuses it; a message put on the stream directly not
    refused = app_client.post("/v1/models/bc-mlp/predict", json={"inputs": [{"f0": 1.0}]}, headers=WAIT)
    assert refused.status_code == 422 and refused.get_json()["errors"][0]["loc"][:2] == ["inputs", 0]
    too_big = app_client.post("/v1/models/bc-mlp/predict", json={"inputs": [bad_row]}, headers=WAIT)
    assert too_big.status_code == 400 and "finite" in too_big.get_json()["detail"]  # it overflows a double
    requests = [PredictRequest(new_id("job"), TENANT, "bc-mlp", 1, [row]) for row in models["bc_rows"][:5]]
    requests.insert(2, PredictRequest(new_id("job"), TENANT, "bc-mlp", 1, [models["bc_rows"][1], bad_row]))
    requests.insert(4, PredictRequest(new_id("job"), TENANT, "bc-mlp", 1, [models["bc_rows"][1]], {"top_k": 5}))
    before = stats(store.redis)
    # One MULTI: the worker reads them all at once, in one batch.
    with store.redis.pipeline(transaction=True) as pipe:
        for request in requests:
            store.create(TENANT, JobType.PREDICT.value, "bc-mlp", {}, job_id=request.job_id, pipe=pipe)
            enqueue_in(pipe, request.encode())
        pipe.execute()
    jobs = [store.wait(r.job_id, 60) for r in requests]
    statuses = [j["status"] if j else None for j in jobs]
    assert statuses == ["succeeded", "succeeded", "failed", "succeeded", "failed", "succeeded", "succeeded"]
    assert jobs[2]["error"]["type"] == "invalid_input" and "row 1" in jobs[2]["error"]["message"]  # type: ignore[index]
    assert jobs[4]["error"]["type"] == "invalid_params" and "top_k" in jobs[4]["error"]["message"]  # type: ignore[index]
    assert stats(store.redis)["alone"] > before["alone"]  # the batch was re-run request by request
    response = app_client.get(f"/v1/jobs/{requests[2].job_id}")
    assert response.status_code == 200 and response.get_json()["status"] == "failed"


def test_requests_a_dead_consumer_held_are_answered_or_failed_with_a_reason_never_left_hanging(
    worker: Any, store: JobStore, models: dict[str, Any]
) -> None:
    client = store.redis
    requests = [PredictRequest(new_id("job"), TENANT, "bc-mlp", 1, [row]) for row in models["bc_rows"][:3]]
    with client.pipeline(transaction=True) as pipe:
        for request in requests:
            store.create(TENANT, JobType.PREDICT.value, "bc-mlp", {}, job_id=request.job_id, pipe=pipe)
            enqueue_in(pipe, request.encode())
        # Read in the same MULTI by a consumer that then "dies": the live worker never sees them as new.
        pipe.xreadgroup(GROUP, "dead@host:1", {STREAM: ">"}, count=len(requests))
        entries = pipe.execute()[-1][0][1]
    assert [e[1][FIELD] for e in entries] and len(entries) == 3
    # The last one was already taken over twice before (delivered 3 times = MLQ_MAX_ATTEMPTS): it fails.
    for _ in range(2):
        client.xclaim(STREAM, GROUP, "dead@host:2", 0, [entries[2][0]])
    answered = [store.wait(r.job_id, 60) for r in requests]
    assert [j["status"] if j else None for j in answered] == ["succeeded", "succeeded", "failed"]
    assert answered[2]["error"]["type"] == "too_many_attempts", answered[2]  # type: ignore[index]
    assert not client.xpending_range(STREAM, GROUP, "-", "+", 10)


def test_an_undecodable_stream_entry_is_dropped_and_the_requests_beside_it_are_served_after_one_death(
    worker: Any, store: JobStore, models: dict[str, Any], mlq_settings: Settings
) -> None:
    client = store.redis
    requests = [PredictRequest(new_id("job"), TENANT, "bc-mlp", 1, [row]) for row in models["bc_rows"][:2]]
    # One MULTI on a raw client (the reply holds bytes that are not UTF-8), read by a consumer that then dies:
    # the live worker never sees these entries as new, it must claim them.
    with redis.Redis.from_url(mlq_settings.redis_url) as raw, raw.pipeline(transaction=True) as pipe:
        store.create(TENANT, JobType.PREDICT.value, "bc-mlp", {}, job_id=requests[0].job_id, pipe=pipe)
        enqueue_in(pipe, requests[0].encode())
        pipe.xadd(STREAM, {FIELD: b"\xff\xfe not utf-8"})
        pipe.xadd(STREAM, {"other": "field"})
        store.create(TENANT, JobType.PREDICT.value, "bc-mlp", {}, job_id=requests[1].job_id, pipe=pipe)
        enqueue_in(pipe, requests[1].encode())
        pipe.xreadgroup(GROUP, "dead@host:3", {STREAM: ">"}, count=4)
        assert len(pipe.execute()[-1][0][1]) == 4
    answered = [store.wait(r.job_id, 60) for r in requests]
    # One death is one delivery too many, not MLQ_MAX_ATTEMPTS: claim cycles that failed must not count.
    assert [j["status"] if j else None for j in answered] == ["succeeded", "succeeded"], worker.log_tail()
    deadline = time.monotonic() + 30
    while client.xpending_range(STREAM, GROUP, "-", "+", 10) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client.xpending_range(STREAM, GROUP, "-", "+", 10)  # the bad entries were dropped
    while "dropping undecodable stream entry" not in worker.log_tail(200_000) and time.monotonic() < deadline:
        time.sleep(0.1)  # the pool child's log reaches the file in blocks
    assert "dropping undecodable stream entry" in worker.log_tail(200_000)


def test_a_stopped_worker_answers_what_it_holds_and_leaves_nothing_pending(
    worker: Any, start_worker: Any, app_client: FlaskClient, store: JobStore, models: dict[str, Any]
) -> None:
    second = start_batching_worker(start_worker)
    assert WorkerLiveness(store.redis).counts()[INFERENCE_QUEUE] == 2
    ids = []
    for row in models["bc_rows"][:40]:
        ids.append(app_client.post("/v1/models/bc-mlp/predict", json={"version": 2, "inputs": [row]}).get_json()["id"])
    second.proc.send_signal(signal.SIGTERM)  # warm shutdown while requests are flowing
    second.proc.wait(timeout=60)
    consumers = [c["name"] for c in store.redis.xinfo_consumers(STREAM, GROUP)]
    assert not [c for c in consumers if c.startswith(second.name + "@")]  # it left the group: nothing pending
    jobs = [store.wait(i, 60) for i in ids]  # whatever it did not take, the first worker answers
    assert [j["status"] for j in jobs if j] == ["succeeded"] * 40
    deadline = time.monotonic() + 30
    while WorkerLiveness(store.redis).counts().get(INFERENCE_QUEUE) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert WorkerLiveness(store.redis).counts()[INFERENCE_QUEUE] == 1
