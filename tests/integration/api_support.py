"""Helpers shared by the test_api_* modules (their fixtures are in api_fixtures.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import redis
from flask.testing import FlaskClient

from store.settings import Settings
from training.manifest import ModelManifest
from training.registry import ModelRegistry

IRIS_CSV = (
    "sepal_length,sepal_width,petal_length,petal_width,species\n"
    "5.1,3.5,1.4,0.2,setosa\n4.9,3.0,1.4,0.2,setosa\n7.0,3.2,4.7,1.4,versicolor\n"
    "6.4,3.2,4.5,1.5,versicolor\n6.3,3.3,6.0,2.5,virginica\n5.8,,5.1,1.9,virginica\n"
    # Six more: the API refuses to queue a training on fewer than 10 labelled rows (api/train_checks.py).
    "4.7,3.2,1.3,0.2,setosa\n5.0,3.6,1.4,0.2,setosa\n6.9,3.1,4.9,1.5,versicolor\n"
    "5.5,2.3,4.0,1.3,versicolor\n7.1,3.0,5.9,2.1,virginica\n6.5,3.0,5.8,2.2,virginica\n"
)
TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}


def make_settings(home: Path, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"redis_url": redis_url, "home": home, "max_upload_mb": 1, "max_batch_rows": 5}
    values.update(overrides)
    return Settings(**values)


def upload(
    client: FlaskClient, text: str = IRIS_CSV, headers: dict[str, str] | None = None, name: str | None = None
) -> dict[str, Any]:
    url = "/v1/datasets" + (f"?name={name}" if name else "")
    response = client.post(url, data=text.encode(), content_type="text/csv", headers=headers or {})
    assert response.status_code == 201, response.get_json()
    dataset: dict[str, Any] = response.get_json()
    return dataset


def train_body(dataset_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "iris",
        "dataset": dataset_id,
        "target": "species",
        "algorithm": "logistic_regression",
    }
    body.update(overrides)
    return body


def register_model(
    settings: Settings, tenant: str = "default", name: str = "iris", manifest: dict[str, Any] | None = None
) -> ModelManifest:
    """A version registered directly with the registry: files of any bytes are enough for the API's routes."""
    staging = settings.home / f"staging-{name}"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "model.bin").write_bytes(b"not a real model")
    base = {
        "algorithm": "logistic_regression",
        "task": "classification",
        "features": [{"name": "sepal_length", "dtype": "number"}, {"name": "island", "dtype": "category"}],
        "classes": ["a", "b"],
    }
    return ModelRegistry(settings.models_dir).register(tenant, name, staging, manifest or base)


def queued_messages(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """The Celery messages waiting in a queue's Redis list, with their decoded bodies."""
    client = redis.Redis.from_url(redis_url)
    out = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        message["decoded"] = json.loads(base64.b64decode(message["body"]))
        out.append(message)
    return out
