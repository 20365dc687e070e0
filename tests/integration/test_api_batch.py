"""Batch prediction over HTTP without a worker: what is refused before queueing, what is queued, and the output
route's answers for jobs that have no file (yet)."""

from __future__ import annotations

from typing import Any

from api_support import queued_messages, register_model, upload
from flask.testing import FlaskClient

from store.contract import BATCH_PREDICT_TASK, BATCH_QUEUE
from store.settings import Settings

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client

IRIS_MODEL = {
    "algorithm": "logistic_regression",
    "task": "classification",
    "features": [{"name": "sepal_length", "dtype": "number"}, {"name": "petal_width", "dtype": "number"}],
    "classes": ["setosa", "versicolor", "virginica"],
}


def setup(client: FlaskClient, settings: Settings, manifest: dict[str, Any] | None = None) -> str:
    register_model(settings, manifest=manifest or IRIS_MODEL)
    return str(upload(client)["id"])


def test_a_batch_prediction_is_queued_on_the_batch_queue_with_its_version_resolved(
    client: FlaskClient, settings: Settings, redis_url: str
) -> None:
    dataset = setup(client, settings)
    response = client.post(
        "/v1/models/iris/batch-predict",
        json={"dataset": dataset, "columns": ["species"], "format": "parquet", "postprocess": {"output": "proba"}},
    )
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert (job["type"], job["status"], job["model"]) == ("batch_predict", "queued", "iris")
    (message,) = queued_messages(redis_url, BATCH_QUEUE)
    assert message["headers"]["task"] == BATCH_PREDICT_TASK
    args = message["decoded"][0][0]
    assert (args["version"], args["dataset_id"], args["columns"], args["format"]) == (
        1,
        dataset,
        ["species"],
        "parquet",
    )
    assert args["postprocess"] == {"output": "proba"}
    output = client.get(f"/v1/jobs/{job['id']}/output")
    assert output.status_code == 409 and "has not started" in output.get_json()["detail"]
    assert output.headers["Retry-After"] == "5"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert "ended cancelled" in client.get(f"/v1/jobs/{job['id']}/output").get_json()["detail"]


def test_what_cannot_run_is_refused_before_it_is_queued(
    client: FlaskClient, settings: Settings, redis_url: str
) -> None:
    dataset = setup(client, settings)

    def post(body: dict[str, Any], model: str = "iris") -> Any:
        return client.post(f"/v1/models/{model}/batch-predict", json=body)

    assert post({"dataset": "ds_00000000000000000000000000"}).status_code == 404
    assert post({"dataset": dataset}, model="nothing").status_code == 404
    assert post({"dataset": dataset, "version": 7}).status_code == 404
    missing = post({"dataset": dataset, "columns": ["id"]})
    assert missing.status_code == 422 and missing.get_json()["errors"][0]["loc"] == ["columns", 0]
    assert "the dataset's columns: sepal_length" in missing.get_json()["detail"]
    clash = post({"dataset": dataset, "columns": ["species", "species"]})
    assert clash.status_code == 422 and "listed twice" in clash.get_json()["detail"]
    assert post({"dataset": dataset, "postprocess": {"top_k": 1}}).status_code == 422  # a table keeps every class
    assert post({"dataset": dataset, "format": "xlsx"}).status_code == 422
    register_model(settings, name="needs-island")
    needs = post({"dataset": dataset}, model="needs-island")
    assert needs.status_code == 422 and "has no column 'island'" in needs.get_json()["detail"]
    regression = {**IRIS_MODEL, "task": "regression", "classes": None}
    register_model(settings, name="reg", manifest=regression)
    refused = post({"dataset": dataset, "postprocess": {"output": "label"}}, model="reg")
    assert refused.status_code == 422 and "regression" in refused.get_json()["detail"]
    assert queued_messages(redis_url, BATCH_QUEUE) == []


def test_the_output_of_an_unknown_job_or_a_training_is_not_found(client: FlaskClient, settings: Settings) -> None:
    dataset = upload(client)["id"]
    train = client.post(
        "/v1/jobs/train",
        json={"model": "iris", "dataset": dataset, "target": "species", "algorithm": "logistic_regression"},
    ).get_json()
    answer = client.get(f"/v1/jobs/{train['id']}/output")
    assert answer.status_code == 404 and "only batch-predict jobs" in answer.get_json()["detail"]
    assert client.get("/v1/jobs/job_00000000000000000000000000/output").status_code == 404
    assert client.get("/v1/jobs/../../etc/passwd/output").status_code == 404


def test_an_oversized_predict_request_points_at_the_batch_route(client: FlaskClient, settings: Settings) -> None:
    register_model(settings)
    response = client.post("/v1/models/iris/predict", json={"inputs": [[1.0, "a"]] * 6})  # the limit is 5 here
    assert response.status_code == 413
    assert "POST /v1/models/iris/batch-predict" in response.get_json()["detail"]
    assert "/v1/models/{name}/batch-predict" in client.get("/openapi.json").get_json()["paths"]
