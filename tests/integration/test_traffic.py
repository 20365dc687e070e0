"""Traffic on aliases: weighted splits, routing keys, shadows, the version that served each answer, live figures
and readiness. A real inference worker process, real Redis, requests through the Flask app."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import redis
from flask.testing import FlaskClient
from polling import wait_until
from sklearn.datasets import load_iris

from api import create_app
from store import live_metrics
from store.contract import INFERENCE_QUEUE
from store.inference_queue import depth
from store.liveness import WorkerLiveness
from store.settings import Settings
from training.pipeline import train_model
from training.predictors import load_predictor
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
TENANT = "default"
WAIT = {"Prefer": "wait=30"}


@pytest.fixture(scope="module")
def models(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """iris v1 (logistic regression), v2 (a shallow random forest, same columns), v3 (three columns only)."""
    tmp = tmp_path_factory.mktemp("traffic-data")
    registry = ModelRegistry(mlq_settings.models_dir, secret_key=mlq_settings.secret_key)
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame.columns = ["sl", "sw", "pl", "pw"]
    frame["species"] = iris.target_names[iris.target]
    path = tmp / "iris.csv"
    frame.to_csv(path, index=False)
    common = {"data_path": path, "target": "species", "model_name": "iris", "registry": registry}
    train_model(algorithm="logistic_regression", **common)  # type: ignore[arg-type]
    train_model(algorithm="random_forest", params={"n_estimators": 3, "max_depth": 1}, **common)  # type: ignore[arg-type]
    train_model(algorithm="logistic_regression", features=["sl", "sw", "pl"], **common)  # type: ignore[arg-type]
    rows = pd.DataFrame(frame.drop(columns="species")).to_dict("records")
    return {"registry": registry, "rows": rows}


@pytest.fixture(scope="module")
def worker(start_worker: Any, models: dict[str, Any]) -> Any:
    return start_worker([INFERENCE_QUEUE])


@pytest.fixture(scope="module")
def client(mlq_settings: Settings) -> FlaskClient:
    return create_app(mlq_settings).test_client()


@pytest.fixture(scope="module")
def rds(mlq_settings: Settings) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    yield found
    found.close()


def put_alias(client: FlaskClient, body: dict[str, Any], alias: str = "production") -> Any:
    return client.put(f"/v1/models/iris/aliases/{alias}", json=body)


def drained(rds: redis.Redis) -> None:
    wait_until(lambda: depth(rds) == 0, 120, "the inference stream to drain")


def test_a_policy_that_cannot_serve_is_a_422_naming_the_field(worker: Any, client: FlaskClient) -> None:
    cases: list[tuple[dict[str, Any], list[Any], str]] = [
        ({"versions": {"1": 90, "2": 20}}, ["body", "versions"], "sum to 100"),
        ({"versions": {"1": 90, "9": 10}}, ["body", "versions", "9"], "unknown version"),
        ({"versions": {"1": 90, "x": 10}}, ["body", "versions", "x"], "version numbers"),
        ({"version": 1, "shadow": {"version": 3, "percent": 20}}, ["body", "shadow", "version"], "other features"),
        ({"versions": {"1": 50, "3": 50}}, ["body", "versions", "3"], "other features"),
        ({"version": 1, "shadow": {"version": 2, "percent": 0}}, ["body", "shadow", "percent"], "1 to 100"),
        ({"version": 1, "versions": {"1": 100}}, ["body", "versions"], "either"),
    ]
    for body, loc, words in cases:
        answer = put_alias(client, body)
        problem = answer.get_json()
        assert answer.status_code == 422, (body, problem)
        assert problem["errors"][0]["loc"] == loc and words in problem["errors"][0]["msg"], (body, problem)
        assert problem["code"] == "invalid_traffic"


def test_an_alias_change_waits_until_the_worker_holds_the_versions(
    worker: Any, client: FlaskClient, rds: redis.Redis
) -> None:
    answer = put_alias(client, {"versions": {"1": 90, "2": 10}})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["aliases"]["production"] == 1  # the registry alias names the largest share
    assert answer.get_json()["traffic"]["production"] == {"versions": {"1": 90, "2": 10}, "shadow": None}
    (record,) = [r for r in WorkerLiveness(rds).workers() if INFERENCE_QUEUE in r["queues"]]
    assert {"default/iris:1", "default/iris:2"} <= set(record["models"])


def test_a_thousand_requests_at_90_10_give_the_candidate_ten_percent_and_name_their_version(
    worker: Any, client: FlaskClient, rds: redis.Redis, models: dict[str, Any]
) -> None:
    assert put_alias(client, {"versions": {"1": 90, "2": 10}}).status_code == 200
    before = {v: live_metrics.read_total(rds, TENANT, "iris", v).get("req", 0.0) for v in (1, 2)}
    served: Counter[int] = Counter()
    jobs = []
    for i in range(1000):
        answer = client.post("/v1/models/iris/predict", json={"inputs": [models["rows"][i % 150]]})
        assert answer.status_code == 202, answer.get_json()
        served[int(answer.headers["X-Model-Version"])] += 1
        jobs.append((answer.get_json()["id"], int(answer.headers["X-Model-Version"])))
    assert set(served) == {1, 2} and 70 <= served[2] <= 130, served
    drained(rds)
    for job_id, version in jobs[::50]:
        job = client.get(f"/v1/jobs/{job_id}").get_json()
        assert job["status"] == "succeeded" and job["result"]["version"] == version, job

    def counted() -> bool:
        after = {v: live_metrics.read_total(rds, TENANT, "iris", v).get("req", 0.0) for v in (1, 2)}
        return all(after[v] - before[v] == served[v] for v in (1, 2))

    wait_until(counted, 60, "the live counters of both versions")
    live = client.get("/v1/models/iris/versions/2/live?window=5m").get_json()
    assert live["requests"] >= served[2] and live["errors"] == 0 and live["error_rate"] == 0.0
    assert sum(live["predictions"]["classes"].values()) == pytest.approx(1.0)
    assert live["latency_ms"]["p99"] is not None and sum(live["latency_ms"]["buckets"].values()) == live["requests"]
    assert client.get("/v1/models/iris/versions/2/live?window=2d").status_code == 422
    assert client.get("/v1/models/iris/versions/99/live").status_code == 404
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'mlq_model_requests_total{model="iris",tenant="default",version="2"}' in metrics


def test_a_routing_key_always_lands_on_the_same_version(
    worker: Any, client: FlaskClient, models: dict[str, Any]
) -> None:
    assert put_alias(client, {"versions": {"1": 50, "2": 50}}).status_code == 200
    row = models["rows"][0]
    landed: dict[str, set[int]] = {}
    for i in range(40):
        key = f"user-{i}"
        for attempt in range(4):
            # The header and the body's routing_key are the same key.
            extra = {"headers": {"X-Routing-Key": key}} if attempt % 2 else {}
            body = {"inputs": [row]} if attempt % 2 else {"inputs": [row], "routing_key": key}
            answer = client.post("/v1/models/iris/predict", json=body, **extra)
            landed.setdefault(key, set()).add(int(answer.headers["X-Model-Version"]))
    assert all(len(versions) == 1 for versions in landed.values()), landed
    assert {v for versions in landed.values() for v in versions} == {1, 2}  # 40 keys do not all hash one way
    # A version with a share is in use, though the registry alias names only the largest share.
    refused = client.delete("/v1/models/iris/versions/2")
    assert refused.status_code == 409 and refused.get_json()["code"] == "version_in_use"


def test_a_shadow_at_100_percent_never_changes_an_answer_and_its_agreement_is_recomputable(
    worker: Any, client: FlaskClient, rds: redis.Redis, models: dict[str, Any]
) -> None:
    answer = put_alias(client, {"version": 1, "shadow": {"version": 2, "percent": 100}})
    assert answer.status_code == 200 and answer.get_json()["traffic"]["production"]["shadow"]["version"] == 2
    drained(rds)
    before = live_metrics.read_total(rds, TENANT, "iris", 2)
    registry, rows = models["registry"], models["rows"]
    primary = load_predictor(registry, TENANT, "iris", 1)
    shadow = load_predictor(registry, TENANT, "iris", 2)
    for start in range(0, 150, 10):
        batch = rows[start : start + 10]
        answer = client.post("/v1/models/iris/predict", json={"inputs": batch}, headers=WAIT)
        job = answer.get_json()
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1", job
        assert job["result"]["version"] == 1
        assert job["result"]["predictions"] == primary.predict(batch)
    agree = sum(a["label"] == b["label"] for a, b in zip(primary.predict(rows), shadow.predict(rows), strict=True))

    def compared() -> dict[str, float]:
        step = live_metrics.minus(live_metrics.read_total(rds, TENANT, "iris", 2), before)
        return step if step.get("sh_n") == 150 else {}

    step: dict[str, float] = wait_until(compared, 60, "the shadow's 150 rows compared")
    assert step["sh_agree"] == agree and step["sreq"] == 15 and step.get("req", 0) == 0
    live = client.get("/v1/models/iris/versions/2/live?window=1h").get_json()
    assert live["shadow"]["agreement"] is not None and 0 <= live["shadow"]["agreement"] <= 1


def test_a_plain_version_puts_the_alias_back_without_a_policy(worker: Any, client: FlaskClient) -> None:
    answer = put_alias(client, {"version": 1})
    assert answer.status_code == 200 and answer.get_json()["traffic"] == {}
    served = {
        client.post("/v1/models/iris/predict", json={"inputs": [{"sl": 5, "sw": 3, "pl": 1, "pw": 0.2}]}).headers[
            "X-Model-Version"
        ]
        for _ in range(20)
    }
    assert served == {"1"}


def test_a_version_the_workers_cannot_load_is_refused_before_any_traffic_moves(
    worker: Any, client: FlaskClient, models: dict[str, Any], tmp_path: Any
) -> None:
    registry: ModelRegistry = models["registry"]
    stage = tmp_path / "stage"
    stage.mkdir()
    source = registry.verified_dir(TENANT, "iris", 1)
    for path in source.iterdir():
        if path.name != "manifest.json":
            (stage / path.name).write_bytes(path.read_bytes())
    manifest: dict[str, Any] = dict(registry.manifest(TENANT, "iris", 1))
    for key in ("files", "artifact", "version", "created_at", "hmac"):
        manifest.pop(key, None)
    broken = registry.register(TENANT, "iris", stage, manifest)["version"]
    damaged = next(p for p in (registry.root / TENANT / "iris" / str(broken)).iterdir() if p.name != "manifest.json")
    damaged.write_bytes(damaged.read_bytes() + b"tampered")  # its sha256 no longer matches: it never loads
    answer = put_alias(client, {"versions": {"1": 90, str(broken): 10}})
    problem = answer.get_json()
    assert answer.status_code == 503 and problem["code"] == "version_not_ready", problem
    assert f"version {broken}" in problem["detail"] and "sha256" in problem["detail"]
    served = {client.post("/v1/models/iris/predict", json={"inputs": [models["rows"][0]]}).headers["X-Model-Version"]}
    assert served == {"1"}  # nothing moved
    registry.delete_version(TENANT, "iris", broken)
