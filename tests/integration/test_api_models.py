"""Models and inference over HTTP, on a registry populated directly with ModelRegistry."""

from __future__ import annotations

import io
import tarfile

import redis
from api_support import register_model
from flask.testing import FlaskClient

from store.inference_queue import queued_requests
from store.settings import Settings

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client


def test_models_are_listed_and_read_with_their_versions(client: FlaskClient, settings: Settings) -> None:
    register_model(settings)
    register_model(settings)
    items = client.get("/v1/models").get_json()["items"]
    assert items == [{"name": "iris", "latest_version": 2, "aliases": {}}]
    model = client.get("/v1/models/iris").get_json()
    assert [v["version"] for v in model["versions"]] == [1, 2]
    manifest = client.get("/v1/models/iris/versions/2").get_json()
    assert manifest["version"] == 2 and manifest["algorithm"] == "logistic_regression"
    assert manifest["artifact"]["format"] == "mlqueue-v1"
    assert client.get("/v1/models/iris/versions/9").status_code == 404
    assert client.get("/v1/models/nothing").status_code == 404
    assert client.get("/v1/models/Bad..Name").status_code == 404


def test_aliases_point_at_versions_and_an_aliased_version_cannot_be_deleted(
    client: FlaskClient, settings: Settings
) -> None:
    register_model(settings)
    register_model(settings)
    response = client.put("/v1/models/iris/aliases/production", json={"version": 1})
    assert response.status_code == 200
    assert response.get_json()["aliases"] == {"production": 1}
    assert client.put("/v1/models/iris/aliases/production", json={"version": 7}).status_code == 404
    assert client.put("/v1/models/iris/aliases/production", json={"version": "1"}).status_code == 422
    conflict = client.delete("/v1/models/iris/versions/1")
    assert conflict.status_code == 409
    assert "production" in conflict.get_json()["detail"]
    assert client.delete("/v1/models/iris/aliases/production").status_code == 204
    assert client.delete("/v1/models/iris/aliases/production").status_code == 404
    assert client.delete("/v1/models/iris/versions/1").status_code == 204
    assert [v["version"] for v in client.get("/v1/models/iris").get_json()["versions"]] == [2]


def test_the_artifact_downloads_as_a_gzip_tarball_of_the_version(client: FlaskClient, settings: Settings) -> None:
    register_model(settings)
    response = client.get("/v1/models/iris/versions/1/artifact")
    assert response.status_code == 200
    assert response.mimetype == "application/gzip"
    assert "iris-v1.tar.gz" in response.headers["Content-Disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.data), mode="r:gz") as tar:
        names = {m.name.split("/")[-1] for m in tar.getmembers()}
    assert {"model.bin", "manifest.json"} <= names


def test_a_prediction_is_queued_on_the_inference_stream_with_the_resolved_version(
    client: FlaskClient, settings: Settings, redis_url: str
) -> None:
    register_model(settings)
    body = {
        "inputs": [{"sepal_length": 5.1, "island": "Torgersen"}, [4.9, None]],
        "postprocess": {"output": "both", "top_k": 1},
    }
    response = client.post("/v1/models/iris/predict", json=body)
    assert response.status_code == 202
    job = response.get_json()
    assert job["type"] == "predict" and job["model"] == "iris" and job["status"] == "queued"
    [request] = queued_requests(redis.Redis.from_url(redis_url))
    assert request["job_id"] == job["id"]
    assert request["version"] == 1 and request["inputs"] == body["inputs"]
    assert request["postprocess"] == {"output": "both", "top_k": 1}
    assert client.get("/readyz").get_json()["queues"]["inference"]["depth"] == 1  # the stream, not a list


def test_bad_rows_are_a_422_naming_the_row_and_column_and_never_reach_the_queue(
    client: FlaskClient, settings: Settings, redis_url: str
) -> None:
    register_model(settings)
    cases = [
        ([{"island": "Dream"}], ["inputs", 0, "sepal_length"]),
        (
            [{"sepal_length": 1.0, "island": "a"}, {"sepal_length": "tall", "island": "b"}],
            ["inputs", 1, "sepal_length"],
        ),
        ([[1.0, "a", "extra"]], ["inputs", 0]),
        ([{"sepal_length": 1.0, "island": {"nested": 1}}], ["inputs", 0, "island"]),
    ]
    for inputs, loc in cases:
        response = client.post("/v1/models/iris/predict", json={"inputs": inputs})
        assert response.status_code == 422, inputs
        assert response.get_json()["errors"][0]["loc"] == loc
        assert f"row {loc[1]}" in response.get_json()["detail"]
    assert queued_requests(redis.Redis.from_url(redis_url)) == []


def test_prediction_limits_and_references_are_checked(client: FlaskClient, settings: Settings) -> None:
    register_model(settings)
    row = {"sepal_length": 1.0, "island": "a"}
    too_many = client.post("/v1/models/iris/predict", json={"inputs": [row] * 6})  # max_batch_rows = 5
    assert too_many.status_code == 413
    assert client.post("/v1/models/iris/predict", json={"inputs": []}).status_code == 422
    assert client.post("/v1/models/iris/predict", json={"inputs": [row], "version": 3}).status_code == 404
    assert client.post("/v1/models/iris/predict", json={"inputs": [row], "version": "staging"}).status_code == 404
    assert client.post("/v1/models/ghost/predict", json={"inputs": [row]}).status_code == 404
    bad_post = {"inputs": [row], "postprocess": {"threshold": 2, "sort": "random", "top_k": 0}}
    locs = {tuple(e["loc"]) for e in client.post("/v1/models/iris/predict", json=bad_post).get_json()["errors"]}
    assert locs == {("postprocess", "threshold"), ("postprocess", "sort"), ("postprocess", "top_k")}


def test_post_processing_the_model_cannot_do_is_a_422_at_submit_and_never_reaches_the_queue(
    client: FlaskClient, settings: Settings, redis_url: str
) -> None:
    register_model(settings)  # two classes
    register_model(
        settings,
        name="price",
        manifest={"algorithm": "ridge", "task": "regression", "features": [{"name": "size", "dtype": "number"}]},
    )
    row = {"sepal_length": 1.0, "island": "a"}
    too_many = client.post("/v1/models/iris/predict", json={"inputs": [row], "postprocess": {"top_k": 3}})
    assert too_many.status_code == 422, too_many.get_json()
    assert too_many.get_json()["errors"][0]["loc"] == ["postprocess", "top_k"]
    assert "from 1 to 2" in too_many.get_json()["detail"]
    proba = client.post("/v1/models/price/predict", json={"inputs": [{"size": 3}], "postprocess": {"output": "proba"}})
    assert proba.status_code == 422, proba.get_json()
    assert proba.get_json()["errors"][0]["loc"] == ["postprocess", "output"]
    assert "regression" in proba.get_json()["detail"]
    assert queued_requests(redis.Redis.from_url(redis_url)) == []
    fine = client.post("/v1/models/iris/predict", json={"inputs": [row], "postprocess": {"top_k": 2}})
    assert fine.status_code == 202


def test_the_artifact_of_a_tampered_version_is_a_409_problem_that_says_what_to_do(
    client: FlaskClient, settings: Settings
) -> None:
    register_model(settings)
    (settings.models_dir / "default" / "iris" / "1" / "model.bin").write_bytes(b"swapped after registration")
    response = client.get("/v1/models/iris/versions/1/artifact")
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] == "artifact_integrity" and problem["type"] == "/problems/conflict"
    assert "model.bin" in problem["detail"] and "re-register" in problem["detail"].lower()
