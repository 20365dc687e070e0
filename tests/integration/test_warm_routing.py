"""Warm routing: two real inference workers, each holding one version (preloaded); requests for a version are
answered by the worker that holds it, whichever worker read them from the stream, and nothing is loaded again.

Both consumers block on the one stream and Redis hands each new entry to one of them, so about half of the
requests reach the worker without their version: those must be handed over (counted), not loaded.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import pytest
import redis
from flask.testing import FlaskClient
from polling import wait_until
from sklearn.datasets import load_breast_cancer

from api import create_app
from store import keys, residency
from store.contract import INFERENCE_QUEUE
from store.settings import Settings
from training.pipeline import train_model
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
WAIT = {"Prefer": "wait=60"}


@pytest.fixture(scope="module")
def rows(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Versions 1 and 2 of `w`, a tiny mlp; the rows to send."""
    tmp = tmp_path_factory.mktemp("warm-data")
    registry = ModelRegistry(mlq_settings.models_dir, secret_key=mlq_settings.secret_key)
    bc = load_breast_cancer(as_frame=True)
    frame = bc.frame.drop(columns="target").iloc[:, :6]
    frame.columns = [f"f{i}" for i in range(6)]
    frame["diagnosis"] = np.where(bc.target == 0, "malignant", "benign")
    frame.to_csv(tmp / "bc.csv", index=False)
    for seed in (0, 1):
        params = {"epochs": 1, "hidden_layers": [16], "seed": seed}
        train_model(
            data_path=tmp / "bc.csv",
            target="diagnosis",
            algorithm="mlp",
            model_name="w",
            registry=registry,
            params=params,
        )
    records: list[dict[str, Any]] = frame.drop(columns="diagnosis").to_dict("records")
    return records


@pytest.fixture(scope="module")
def workers(start_worker: Any, rows: Any) -> dict[int, str]:
    """Version -> the consumer name of the worker that preloaded it."""
    saved = os.environ.get("MLQ_INFERENCE_CLAIM_IDLE_S")
    os.environ["MLQ_INFERENCE_CLAIM_IDLE_S"] = "5"
    try:
        holders = {}
        for version in (1, 2):
            worker = start_worker([INFERENCE_QUEUE], preload=f"w:{version}")
            holders[version] = f"{worker.first_record['hostname']}:{worker.first_record['pid']}"
        return holders
    finally:
        if saved is None:
            os.environ.pop("MLQ_INFERENCE_CLAIM_IDLE_S")
        else:
            os.environ["MLQ_INFERENCE_CLAIM_IDLE_S"] = saved


@pytest.fixture(scope="module")
def app_client(mlq_settings: Settings) -> FlaskClient:
    return create_app(mlq_settings).test_client()


def test_each_version_is_served_by_the_worker_that_holds_it_and_nothing_is_loaded_again(
    workers: dict[int, str], app_client: FlaskClient, rows: list[dict[str, Any]], mlq_settings: Settings
) -> None:
    client = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    for version, name in workers.items():  # each consumer announced what it holds
        key = keys.warm_holders("default", "w", version)
        wait_until(lambda: bool(client.sismember(key, name)), 30, what=f"{name} in {key}")  # noqa: B023

    # Both preloads reported (each worker writes its counters every second).
    def preloaded() -> dict[str, float]:
        now = residency.counters(client)
        return now if now["loads"] >= 2 else {}

    before = wait_until(preloaded, 30, what="both preloads on the counters")
    served: list[tuple[int, str]] = []
    for i in range(16):
        version = 1 + (i // 2) % 2  # 1, 1, 2, 2, ...: each worker reads requests for both versions
        response = app_client.post("/v1/models/w/predict", json={"version": version, "inputs": [rows[i]]}, headers=WAIT)
        job = response.get_json()
        assert response.status_code == 200 and job["status"] == "succeeded", job
        assert job["result"]["version"] == version
        served.append((version, job["worker"]))
    assert [w for _, w in served] == [workers[v] for v, _ in served]

    def reported() -> dict[str, float]:
        now = residency.counters(client)
        return now if now["hits"] - before["hits"] >= 16 else {}

    after = wait_until(reported, 30, what="the cache counters")
    assert after["loads"] == before["loads"] and after["misses"] == before["misses"]
    assert after["handoffs"] - before["handoffs"] >= 1
    text = app_client.get("/metrics").get_data(as_text=True)
    handoffs = re.search(r"^mlq_model_cache_handoffs_total (\S+)$", text, re.M)
    assert handoffs is not None and float(handoffs.group(1)) >= 1
    client.close()
