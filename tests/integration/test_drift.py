"""Drift end to end: models trained here, one real worker process serving online and batch predictions (it counts
live inputs into the reference bins), real Redis, and the drift route and gauges through the Flask app.

Rows drawn from the training data must read `none` on every feature; the same rows with one feature moved by
two standard deviations must read `major` on that feature alone. Counts are polled with deadlines, never timed.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from flask.testing import FlaskClient
from polling import wait_until

from api import create_app
from store.contract import BATCH_QUEUE, INFERENCE_QUEUE
from store.jobs import JobStore
from store.settings import Settings
from training.pipeline import train_model
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
FEATURES = ["x0", "x1", "x2", "x3", "site"]
WAIT = {"Prefer": "wait=30"}
SHIFTED = "x1"


def synthetic(n: int, seed: int) -> pd.DataFrame:
    """Four numbers and a category; three classes a linear model separates well."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, 4)), 4)
    site = rng.choice(["north", "south", "east"], size=n)
    score = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + (site == "north") * 0.8
    frame = pd.DataFrame(x, columns=FEATURES[:4])
    frame["site"] = site
    frame["label"] = np.where(score < -0.5, "low", np.where(score < 0.5, "mid", "high"))
    return frame


@pytest.fixture(scope="module")
def data(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Versions of drift-same, drift-shift and drift-batch (one each), and drift-old v1: a version whose
    manifest has no reference, as every version registered before references existed."""
    tmp = tmp_path_factory.mktemp("drift-data")
    registry = ModelRegistry(mlq_settings.models_dir, secret_key=mlq_settings.secret_key)
    frame = synthetic(3000, seed=1)
    frame.to_csv(tmp / "train.csv", index=False)
    for name in ("drift-same", "drift-shift", "drift-batch"):
        train_model(
            data_path=tmp / "train.csv",
            target="label",
            algorithm="logistic_regression",
            model_name=name,
            registry=registry,
        )
    manifest = registry.manifest("default", "drift-same", 1)
    old = {k: copy.deepcopy(v) for k, v in manifest.items() if k not in ("version", "created_at", "files", "artifact")}
    old.pop("drift_reference")
    old.pop("hmac", None)
    staging = Path(tempfile.mkdtemp(dir=registry.root))
    try:
        source = registry.verified_dir("default", "drift-same", 1)
        for f in manifest["files"]:
            shutil.copyfile(source / f, staging / f)
        registry.register("default", "drift-old", staging, old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"tmp": tmp, "frame": frame, "registry": registry}


@pytest.fixture(scope="module")
def worker(start_worker: Any, data: dict[str, Any]) -> Any:
    return start_worker([INFERENCE_QUEUE, BATCH_QUEUE])


@pytest.fixture(scope="module")
def app(mlq_settings: Settings) -> FlaskClient:
    return create_app(mlq_settings).test_client()


@pytest.fixture(scope="module")
def store(mlq_settings: Settings) -> Iterator[JobStore]:
    client = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    yield JobStore(client)
    client.close()


def predict(app: FlaskClient, model: str, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 100):
        response = app.post(f"/v1/models/{model}/predict", json={"inputs": rows[start : start + 100]}, headers=WAIT)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["status"] == "succeeded", response.get_json()


def drift_with_rows(app: FlaskClient, model: str, rows: int, version: int = 1) -> dict[str, Any]:
    """The drift report once the worker's counts of `rows` rows are visible."""

    def counted() -> dict[str, Any]:
        response = app.get(f"/v1/models/{model}/versions/{version}/drift?window=1h")
        assert response.status_code == 200, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body if body["rows"] >= rows else {}

    return wait_until(counted, 60, f"{rows} rows counted for {model}")


def test_rows_from_the_training_data_read_no_drift_on_any_feature(
    app: FlaskClient, worker: Any, data: dict[str, Any]
) -> None:
    rows = data["frame"].sample(600, random_state=7)[FEATURES].to_dict("records")
    predict(app, "drift-same", rows)
    body = drift_with_rows(app, "drift-same", 600)
    assert body["rows"] == 600 and body["window"] == "1h" and body["enough_rows"]
    assert [f["name"] for f in body["features"]] == FEATURES
    for feature in body["features"]:
        assert feature["psi"] < 0.1 and feature["level"] == "none", feature
        assert sum(feature["live"]) == 600
    assert body["predictions"]["kind"] == "class" and sum(body["predictions"]["live"]) == 600
    assert body["predictions"]["level"] == "none", body["predictions"]


def test_one_feature_moved_by_two_standard_deviations_reads_major_on_that_feature_only(
    app: FlaskClient, worker: Any, data: dict[str, Any]
) -> None:
    frame = data["frame"].sample(600, random_state=8)[FEATURES].copy()
    frame[SHIFTED] = frame[SHIFTED] + 2 * data["frame"][SHIFTED].std()
    # Arrays in feature order, as a client may send them: binned like objects.
    predict(app, "drift-shift", frame.to_numpy().tolist())
    body = drift_with_rows(app, "drift-shift", 600)
    levels = {f["name"]: f["level"] for f in body["features"]}
    assert levels == {name: ("major" if name == SHIFTED else "none") for name in FEATURES}, body["features"]
    assert body["level"] == "major"
    metrics = app.get("/metrics").get_data(as_text=True)
    line = next(
        (
            ln
            for ln in metrics.splitlines()
            if ln.startswith("mlq_drift_psi{") and 'model="drift-shift"' in ln and f'feature="{SHIFTED}"' in ln
        ),
        None,
    )
    assert line is not None and float(line.rsplit(" ", 1)[1]) >= 0.25, line
    assert any(
        ln.startswith("mlq_drift_level{") and 'model="drift-shift"' in ln and ln.endswith(" 2.0")
        for ln in metrics.splitlines()
    )


def test_batch_predictions_are_counted_too(
    app: FlaskClient, worker: Any, store: JobStore, data: dict[str, Any]
) -> None:
    rows = data["frame"].sample(500, random_state=9)[FEATURES]
    response = app.post(
        "/v1/datasets?name=drift-batch", data=rows.to_csv(index=False).encode(), content_type="text/csv"
    )
    assert response.status_code == 201, response.get_json()
    job = app.post("/v1/models/drift-batch/batch-predict", json={"dataset": response.get_json()["id"]}).get_json()
    finished = store.wait(job["id"], 180)
    assert finished is not None and finished["status"] == "succeeded", finished
    body = drift_with_rows(app, "drift-batch", 500)
    assert body["rows"] == 500
    assert all(f["level"] == "none" for f in body["features"]), body["features"]


def test_a_version_without_a_reference_still_serves_and_its_drift_is_a_409_saying_why(
    app: FlaskClient, worker: Any, data: dict[str, Any]
) -> None:
    predict(app, "drift-old", data["frame"][FEATURES].head(5).to_dict("records"))
    response = app.get("/v1/models/drift-old/versions/1/drift")
    assert response.status_code == 409
    problem = response.get_json()
    assert problem["code"] == "no_drift_reference" and "no drift reference" in problem["detail"]
    assert "train a new version" in problem["detail"]


def test_bad_windows_and_unknown_versions_are_refused(app: FlaskClient, data: dict[str, Any]) -> None:
    response = app.get("/v1/models/drift-same/versions/1/drift?window=2y")
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["loc"] == ["query", "window"]
    assert "10m" in response.get_json()["errors"][0]["msg"]
    assert app.get("/v1/models/drift-same/versions/9/drift").status_code == 404
    assert app.get("/v1/models/no-such-model/versions/1/drift").status_code == 404


def test_another_tenant_cannot_read_the_drift_of_a_model(mlq_settings: Settings, data: dict[str, Any]) -> None:
    tokens = {"tok-default": "default", "tok-other": "other"}
    client = create_app(Settings(redis_url=mlq_settings.redis_url, home=mlq_settings.home, auth_tokens=tokens))
    test_client = client.test_client()
    url = "/v1/models/drift-same/versions/1/drift"
    assert test_client.get(url, headers={"Authorization": "Bearer tok-default"}).status_code == 200
    assert test_client.get(url, headers={"Authorization": "Bearer tok-other"}).status_code == 404
    assert test_client.get(url).status_code == 401
