"""POST /v1/jobs/train: everything is validated before anything is queued; then a job and a JSON message."""

from __future__ import annotations

import threading
import time

import redis
from api_support import queued_messages, train_body, upload
from flask.testing import FlaskClient

from store import keys
from store.contract import TRAIN_QUEUE, TRAIN_TASK
from store.jobs import JobStore
from training.params import ALGORITHM_NAMES

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client


def test_a_valid_request_is_a_202_job_with_its_message_on_the_train_queue(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    response = client.post("/v1/jobs/train", json=train_body(dataset["id"], params={"C": 0.5}))
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert int(response.headers["Retry-After"]) >= 1
    assert job["status"] == "queued" and job["type"] == "train" and job["model"] == "iris"
    assert job["attempts"] == 0 and job["started_at"] is None and job["result"] is None and job["worker"] is None
    assert job["links"] == {
        "self": f"/v1/jobs/{job['id']}",
        "events": f"/v1/jobs/{job['id']}/events",
        "cancel": f"/v1/jobs/{job['id']}/cancel",
    }
    [message] = queued_messages(redis_url, "train")
    assert message["content-type"] == "application/json"
    assert message["headers"]["task"] == TRAIN_TASK and message["headers"]["id"] == job["id"]
    request = message["decoded"][0][0]
    assert request["dataset_id"] == dataset["id"] and request["tenant"] == "default"
    assert request["params"] == {"C": 0.5, "max_iter": 1000, "class_weight": None}
    assert client.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "queued"


def test_an_unknown_algorithm_is_refused_with_the_list_of_valid_ones(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    response = client.post("/v1/jobs/train", json=train_body(dataset["id"], algorithm="xgboost"))
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["type"] == "/problems/validation" and problem["code"] == "unknown_algorithm"
    assert all(name in problem["detail"] for name in ALGORITHM_NAMES)
    assert problem["errors"][0]["loc"] == ["algorithm"]
    assert queued_messages(redis_url, "train") == []


def test_bad_params_are_a_422_with_one_error_per_parameter(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    body = train_body(dataset["id"], algorithm="mlp", params={"epochs": 0, "lr": "fast", "dropout": 0.1})
    response = client.post("/v1/jobs/train", json=body)
    assert response.status_code == 422
    locs = {tuple(e["loc"]) for e in response.get_json()["errors"]}
    assert locs == {("params", "epochs"), ("params", "lr"), ("params", "dropout")}
    assert queued_messages(redis_url, "train") == []


def test_a_missing_target_or_feature_column_is_named_with_the_available_ones(client: FlaskClient) -> None:
    dataset = upload(client)
    response = client.post(
        "/v1/jobs/train", json=train_body(dataset["id"], target="colour", features=["sepal_length", "beak"])
    )
    assert response.status_code == 422
    problem = response.get_json()
    assert "'colour'" in problem["detail"] and "'beak'" in problem["detail"] and "petal_width" in problem["detail"]
    assert [e["loc"] for e in problem["errors"]] == [["target"], ["features", 1]]


def test_a_regression_only_algorithm_on_a_text_target_is_refused_before_queueing(client: FlaskClient) -> None:
    dataset = upload(client)
    response = client.post("/v1/jobs/train", json=train_body(dataset["id"], algorithm="ridge"))
    assert response.status_code == 422
    assert "classification" in response.get_json()["detail"]


def test_dataset_problems_the_upload_found_are_a_422_at_submit_and_never_reach_the_queue(
    client: FlaskClient, redis_url: str
) -> None:
    # The uploads themselves succeed: a dataset may serve other targets, or batch predictions.
    few = upload(client, "a,b,y\n" + "".join(f"{i},{i % 3},{'x' if i % 2 else 'z'}\n" for i in range(6)))
    one_class = upload(client, "a,b,y\n" + "".join(f"{i},{i % 3},same\n" for i in range(12)))
    empty = upload(client, "a,gap,y,price\n" + "".join(f"{i},,{'x' if i % 2 else 'z'},{i * 1.5}\n" for i in range(12)))
    cases = [
        (train_body(few["id"], target="y"), [["dataset"]], "only 6 of its 6 rows"),
        (train_body(one_class["id"], target="y"), [["target"]], "only one class"),
        (train_body(empty["id"], target="y"), [["features"]], "'gap' has no values"),
        (train_body(empty["id"], target="y", features=["a", "gap"]), [["features", 1]], "'gap' has no values"),
        (train_body(empty["id"], target="gap", features=["a"]), [["target"]], "'gap' has no values"),
        (
            train_body(empty["id"], target="y", features=["a"], task="regression", algorithm="random_forest"),
            [["task"]],
            "regression needs a numeric target",
        ),
    ]
    for body, locs, words in cases:
        response = client.post("/v1/jobs/train", json=body)
        assert response.status_code == 422, (body, response.get_json())
        problem = response.get_json()
        assert [e["loc"] for e in problem["errors"]] == locs and words in problem["detail"], problem
        assert problem["code"] == "invalid_data"
    assert queued_messages(redis_url, TRAIN_QUEUE) == []
    # The same datasets with a target and features they can serve are queued.
    fine = client.post(
        "/v1/jobs/train", json=train_body(empty["id"], target="price", features=["a", "y"], algorithm="ridge")
    )
    assert fine.status_code == 202, fine.get_json()
    other_target = client.post("/v1/jobs/train", json=train_body(one_class["id"], target="b", features=["a"]))
    assert other_target.status_code == 202, other_target.get_json()


def test_an_unknown_dataset_is_a_404(client: FlaskClient) -> None:
    response = client.post("/v1/jobs/train", json=train_body("ds_00000000000000000000000000"))
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_schema_errors_are_a_422_with_loc_and_msg(client: FlaskClient) -> None:
    dataset = upload(client)
    body = train_body(dataset["id"], model="Bad Name", split={"test": 1.5}, device="tpu", surprise=1)
    response = client.post("/v1/jobs/train", json=body)
    assert response.status_code == 422
    locs = {tuple(e["loc"]) for e in response.get_json()["errors"]}
    assert {("model",), ("split", "test"), ("device",), ("surprise",)} <= locs
    assert all(isinstance(e["msg"], str) for e in response.get_json()["errors"])


def test_malformed_json_is_a_400_and_a_wrong_content_type_is_a_415(client: FlaskClient) -> None:
    broken = client.post("/v1/jobs/train", data=b'{"model": "iris",', content_type="application/json")
    assert broken.status_code == 400
    assert broken.content_type == "application/problem+json"
    assert client.post("/v1/jobs/train", data=b"NaN", content_type="application/json").status_code == 400
    assert client.post("/v1/jobs/train", data=b"model=iris", content_type="text/plain").status_code == 415
    assert client.post("/v1/jobs/train", json=[1, 2]).status_code == 422


def test_the_same_idempotency_key_and_body_give_the_same_job(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers=headers)
    # Same JSON, other key order: still the same request.
    again = client.post("/v1/jobs/train", json=dict(reversed(list(train_body(dataset["id"]).items()))), headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert len(queued_messages(redis_url, "train")) == 1
    other = client.post("/v1/jobs/train", json=train_body(dataset["id"], model="other"), headers=headers)
    assert other.status_code == 422
    assert other.get_json()["code"] == "idempotency_key_reused"


def test_a_refused_request_does_not_burn_its_idempotency_key(client: FlaskClient) -> None:
    dataset = upload(client)
    headers = {"Idempotency-Key": "retry-me"}
    bad = client.post("/v1/jobs/train", json=train_body(dataset["id"], algorithm="nope"), headers=headers)
    assert bad.status_code == 422
    good = client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers=headers)
    assert good.status_code == 202


def test_an_idempotency_key_still_in_flight_is_a_409(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    first = client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202
    # Turn the stored key back into the placeholder a request in progress holds.
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    [name] = r.keys(keys.idempotency("default", "*"))
    r.set(name, str(r.get(name)).replace(first.get_json()["id"], "").replace('""', "null"))
    again = client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers={"Idempotency-Key": "k1"})
    assert again.status_code == 409


def _finish_soon(redis_url: str, job_id: str) -> threading.Thread:
    def run() -> None:
        store = JobStore(redis.Redis.from_url(redis_url))
        time.sleep(0.3)  # the scenario: the job ends while the request is already waiting on it
        store.mark_running(job_id, "test-worker")
        store.finish(job_id, "succeeded", result={"model": "iris", "version": 1})

    thread = threading.Thread(target=run)
    return thread


def test_wait_answers_200_with_the_finished_job_when_it_ends_in_time(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    job = client.post("/v1/jobs/train", json=train_body(dataset["id"])).get_json()
    thread = _finish_soon(redis_url, job["id"])
    thread.start()
    response = client.get(f"/v1/jobs/{job['id']}?wait=20")
    thread.join()
    assert response.status_code == 200
    assert response.get_json()["status"] == "succeeded"
    assert response.get_json()["result"] == {"model": "iris", "version": 1}
    assert response.get_json()["attempts"] == 1
    assert response.get_json()["worker"] == "test-worker"  # the worker of the latest attempt


def test_prefer_wait_on_submit_answers_200_and_says_preference_applied(client: FlaskClient, redis_url: str) -> None:
    dataset = upload(client)
    store = JobStore(redis.Redis.from_url(redis_url))
    r = redis.Redis.from_url(redis_url)

    def finish_first_job() -> None:
        for _ in range(100):  # wait for the job the request below creates
            ids = r.zrange(keys.tenant_jobs("default"), 0, -1)
            if ids:
                assert isinstance(ids[0], bytes)
                store.finish(ids[0].decode(), "failed", error={"type": "invalid_data", "message": "x"})
                return
            time.sleep(0.05)

    thread = threading.Thread(target=finish_first_job)
    thread.start()
    response = client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers={"Prefer": "wait=20"})
    thread.join()
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=20"
    assert response.get_json()["status"] == "failed"


def test_a_wait_that_runs_out_is_the_usual_202(client: FlaskClient) -> None:
    dataset = upload(client)
    response = client.post("/v1/jobs/train?wait=1", json=train_body(dataset["id"]))
    assert response.status_code == 202
    assert response.get_json()["status"] == "queued"
    assert client.post("/v1/jobs/train?wait=-1", json=train_body(dataset["id"])).status_code == 422
