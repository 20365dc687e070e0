"""Model residency end to end: a real inference worker whose MLQ_MODEL_MEMORY_MB holds two of three versions,
round-robin traffic through the Flask app, and the cache's counters on /metrics (read from Redis).

Round robin over three versions with room for two is LRU's worst case: every request after the first two
misses and evicts. What must hold is that no request fails, and that the loads and evictions are counted.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from polling import wait_until
from sklearn.datasets import load_breast_cancer

from api import create_app
from store.contract import INFERENCE_QUEUE
from store.settings import Settings
from training.pipeline import train_model
from training.registry import ModelRegistry
from worker.model_cache import ModelCache

pytestmark = pytest.mark.integration
WAIT = {"Prefer": "wait=60"}
BUDGET_MB = 1
ROUNDS = 4


@pytest.fixture(scope="module")
def models(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """m v1..v3: an mlp of ~0.4 MB each (two fit in 1 MB, three do not); `huge`: one larger than 1 MB alone."""
    tmp = tmp_path_factory.mktemp("residency-data")
    registry = ModelRegistry(mlq_settings.models_dir, secret_key=mlq_settings.secret_key)
    bc = load_breast_cancer(as_frame=True)
    frame = bc.frame.drop(columns="target").iloc[:, :8]
    frame.columns = [f"f{i}" for i in range(8)]
    frame["diagnosis"] = np.where(bc.target == 0, "malignant", "benign")
    path = tmp / "bc.csv"
    frame.to_csv(path, index=False)
    for name, hidden, seeds in (("m", [300, 300], (0, 1, 2)), ("huge", [700, 700], (0,))):
        for seed in seeds:
            params = {"epochs": 1, "hidden_layers": hidden, "batch_size": 128, "seed": seed}
            train_model(
                data_path=path, target="diagnosis", algorithm="mlp", model_name=name, registry=registry, params=params
            )
    # The footprint as a worker measures it: two versions fit the budget, three do not.
    cache = ModelCache(registry, device="cpu")
    for version in (1, 2, 3):
        cache.get("default", "m", version)
    sizes = sorted(cache.footprints().values())
    assert sizes[0] + sizes[1] <= BUDGET_MB * 2**20 < sum(sizes), sizes
    return {"rows": frame.drop(columns="diagnosis").to_dict("records")}


@pytest.fixture(scope="module")
def worker(start_worker: Any, models: dict[str, Any]) -> Any:
    saved = os.environ.get("MLQ_MODEL_MEMORY_MB")
    os.environ["MLQ_MODEL_MEMORY_MB"] = str(BUDGET_MB)
    try:
        return start_worker([INFERENCE_QUEUE])
    finally:
        if saved is None:
            os.environ.pop("MLQ_MODEL_MEMORY_MB")
        else:
            os.environ["MLQ_MODEL_MEMORY_MB"] = saved


@pytest.fixture(scope="module")
def app_client(mlq_settings: Settings) -> FlaskClient:
    return create_app(mlq_settings).test_client()


def scrape(client: FlaskClient) -> dict[str, float]:
    """The mlq_model_* samples of /metrics, by name and labels as written."""
    text = client.get("/metrics").get_data(as_text=True)
    return {m[1]: float(m[2]) for m in re.finditer(r"^((?:mlq_model_)\S+)\s+(\S+)$", text, re.M)}


def counter(samples: dict[str, float], name: str) -> float:
    return samples.get(f"mlq_model_cache_{name}_total", 0.0)


def test_round_robin_over_more_versions_than_fit_fails_nothing_and_counts_evictions(
    worker: Any, app_client: FlaskClient, models: dict[str, Any]
) -> None:
    before = scrape(app_client)
    answers = []
    for i in range(3 * ROUNDS):
        version = 1 + i % 3
        response = app_client.post(
            "/v1/models/m/predict", json={"version": version, "inputs": [models["rows"][i]]}, headers=WAIT
        )
        answers.append((version, response.status_code, response.get_json()))
    failed = [a for a in answers if a[1] != 200 or a[2]["status"] != "succeeded"]
    assert failed == []
    assert [a[2]["result"]["version"] for a in answers] == [a[0] for a in answers]

    def counted() -> dict[str, float]:
        now = scrape(app_client)
        return now if counter(now, "evictions") - counter(before, "evictions") >= 3 * ROUNDS - 2 else {}

    after = wait_until(counted, timeout_s=60, what="the evictions on /metrics")
    assert counter(after, "loads") - counter(before, "loads") == 3 * ROUNDS
    assert counter(after, "misses") - counter(before, "misses") == 3 * ROUNDS
    assert counter(after, "load_failures") == counter(before, "load_failures")
    assert after["mlq_model_load_seconds_count"] - before.get("mlq_model_load_seconds_count", 0) == 3 * ROUNDS
    # Per worker: what it holds, never over its budget, and the budget itself.
    held = {k: v for k, v in after.items() if k.startswith("mlq_model_cache_bytes{")}
    budgets = {k: v for k, v in after.items() if k.startswith("mlq_model_cache_budget_bytes{")}
    assert list(budgets.values()) == [BUDGET_MB * 2**20]
    assert len(held) == 1 and 0 < next(iter(held.values())) <= BUDGET_MB * 2**20
    versions = [v for k, v in after.items() if k.startswith("mlq_model_cache_versions{")]
    assert versions == [2.0]


def test_repeated_requests_for_a_resident_version_are_hits(
    worker: Any, app_client: FlaskClient, models: dict[str, Any]
) -> None:
    before = scrape(app_client)
    for i in range(5):
        response = app_client.post(
            "/v1/models/m/predict", json={"version": 2, "inputs": [models["rows"][i]]}, headers=WAIT
        )
        assert response.status_code == 200 and response.get_json()["status"] == "succeeded"

    def counted() -> dict[str, float]:
        now = scrape(app_client)
        return now if counter(now, "hits") - counter(before, "hits") >= 4 else {}

    after = wait_until(counted, timeout_s=60, what="the hits on /metrics")
    assert counter(after, "hits") - counter(before, "hits") in (4.0, 5.0)  # 5 if v2 was still resident
    assert 0 < after["mlq_model_cache_hit_ratio"] < 1


def test_a_version_larger_than_the_whole_budget_fails_its_request_and_the_worker_serves_on(
    worker: Any, app_client: FlaskClient, models: dict[str, Any]
) -> None:
    response = app_client.post("/v1/models/huge/predict", json={"inputs": [models["rows"][0]]}, headers=WAIT)
    job = response.get_json()
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "model_too_large" and "MLQ_MODEL_MEMORY_MB=1" in job["error"]["message"]
    assert worker.proc.poll() is None
    again = app_client.post("/v1/models/m/predict", json={"version": 1, "inputs": [models["rows"][0]]}, headers=WAIT)
    assert again.status_code == 200 and again.get_json()["status"] == "succeeded"
