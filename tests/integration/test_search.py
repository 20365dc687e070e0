"""Hyperparameter searches end to end: the API plans and queues them, two real train workers run the trials.

Trials are ordinary train jobs, so they spread over the workers and run at the same time; the search registers
the best one. The API is the Flask test client on the workers' own settings (same Redis, same MLQ_HOME).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from job_harness import TENANT, JobHarness, breast_cancer_csv, dump, iris_csv, present, progress_of, request_of
from worker_processes import StartWorker, WorkerProcess, wait_until_announced

from api import create_app
from store import keys
from store.contract import TRAIN_QUEUE
from store.liveness import WorkerLiveness
from store.records import JobRecord
from store.settings import Settings
from training.errors import ResourceNotFound
from training.optimize import optimize_version
from training.pipeline import train_model

pytestmark = pytest.mark.integration
SEARCH_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def harness(mlq_settings: Settings) -> Iterator[JobHarness]:
    h = JobHarness(mlq_settings, SEARCH_TIMEOUT_S)
    yield h
    h.close()


@pytest.fixture(scope="module")
def api(mlq_settings: Settings) -> FlaskClient:
    return create_app(mlq_settings).test_client()


@pytest.fixture(scope="module")
def workers(start_worker: StartWorker, harness: JobHarness) -> list[WorkerProcess]:
    both = [start_worker([TRAIN_QUEUE], wait=False) for _ in range(2)]  # they boot side by side
    for worker in both:
        wait_until_announced(worker, WorkerLiveness(harness.redis))
    return both


@pytest.fixture(scope="module")
def iris(harness: JobHarness) -> str:
    return harness.save_dataset(iris_csv(), "iris")


@pytest.fixture(scope="module")
def cancer(harness: JobHarness) -> str:
    return harness.save_dataset(breast_cancer_csv(), "cancer")


def submit(api: FlaskClient, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    response = api.post("/v1/jobs/search", json=body)
    assert response.status_code == status, response.get_json()
    job: dict[str, Any] = response.get_json()
    return job


def trials_of(harness: JobHarness, search_id: str) -> list[JobRecord]:
    return [present(t) for t in trials_or_none(harness, search_id)]


def trials_or_none(harness: JobHarness, search_id: str) -> list[JobRecord | None]:
    """The trials' records; None for one the search has not created yet (it creates them one by one)."""
    request = request_of(harness.jobs.get(search_id))
    return [harness.jobs.get(t["id"]) for t in request["trials"]]


def interval(job: JobRecord) -> tuple[datetime, datetime]:
    def parse(s: str | None) -> datetime:
        return datetime.fromisoformat(str(s).replace("Z", "+00:00"))

    return parse(job["started_at"]), parse(job["finished_at"])


def test_a_2x2_grid_runs_trials_concurrently_on_two_workers_and_registers_the_best(
    api: FlaskClient, harness: JobHarness, workers: list[Any], iris: str
) -> None:
    body = {
        "model": "iris-grid",
        "dataset": iris,
        "target": "species",
        "algorithm": "mlp",
        "params": {"epochs": 30, "batch_size": 8, "early_stopping_patience": 0},
        "search": {"lr": [0.05, 0.001], "hidden_layers": [[8], [16]]},
        "metric": "f1",
    }
    search = submit(api, body)
    assert search["type"] == "search"
    job = harness.wait(search["id"])
    assert job["status"] == "succeeded", dump(job)

    result = job["result"]
    assert (result["metric"], result["direction"], result["rank_by"]) == ("f1", "maximize", "test")
    scores = [t["score"] for t in result["trials"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    trials = trials_of(harness, search["id"])
    assert all(t["status"] == "succeeded" and t["type"] == "train" for t in trials), dump(trials)
    assert all(request_of(t)["parent"] == search["id"] for t in trials)
    # Both workers took trials, and at least two trials were running at the same time.
    assert len({str(t["worker"]).split("@")[0] for t in trials}) == 2, dump(trials)
    spans = sorted(interval(t) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)), spans

    # Only the search registered a version: the best trial's, with the whole trial table in its manifest.
    model = harness.registry.get_model(TENANT, "iris-grid")
    assert [v["version"] for v in model["versions"]] == [1]
    manifest = api.get("/v1/models/iris-grid/versions/1").get_json()
    assert manifest["job_id"] == search["id"] and len(manifest["search"]["trials"]) == 4
    assert manifest["search"]["best_trial"] == result["trials"][0]["trial"]
    assert manifest["params"]["lr"] == result["trials"][0]["params"]["lr"]
    assert manifest["metrics"]["f1"] == scores[0]
    assert manifest["feature_importance"]["features"][0]["name"].startswith("petal")
    assert progress_of(job)["trials_done"] == 4 and progress_of(job)["best"]["score"] == scores[0]
    assert not (harness.settings.searches_dir / TENANT / search["id"]).exists()
    # Each progress event carries the trial that changed, never the whole table (issue 18: events of a 100-trial
    # search grew with its square): the table is one GET away.
    for log in (keys.job_log(search["id"]), keys.tenant_log(TENANT)):
        entries: list[tuple[str, dict[str, str]]] = harness.redis.xrange(log)  # type: ignore[assignment]
        events = [
            json.loads(fields["progress"])
            for _, fields in entries
            if fields.get("event") == "progress" and fields.get("job", search["id"]) == search["id"]
        ]
        assert events and all("trials" not in e for e in events), events
        changed = [e["trial"]["id"] for e in events if "trial" in e]
        assert set(changed) == {t["id"] for t in trials}, events


def test_a_random_search_is_reproducible_with_its_seed(
    api: FlaskClient, harness: JobHarness, workers: list[Any], iris: str
) -> None:
    body: dict[str, Any] = {
        "model": "iris-random",
        "dataset": iris,
        "target": "species",
        "algorithm": "logistic_regression",
        "search": {"strategy": "random", "trials": 3, "seed": 11, "space": {"C": {"log_uniform": [0.01, 10]}}},
    }
    first, again = submit(api, body), submit(api, body)
    other = submit(api, {**body, "search": {**body["search"], "seed": 12}})
    params = {}
    for name, search in (("first", first), ("again", again), ("other", other)):
        job = harness.wait(search["id"])
        assert job["status"] == "succeeded", dump(job)
        params[name] = sorted(t["params"]["C"] for t in job["result"]["trials"])
    assert params["first"] == params["again"] != params["other"]
    assert [v["version"] for v in harness.registry.get_model(TENANT, "iris-random")["versions"]] == [1, 2, 3]


def test_a_bad_value_in_the_search_space_is_a_422_before_anything_is_queued(api: FlaskClient, iris: str) -> None:
    body = {
        "model": "iris-bad",
        "dataset": iris,
        "target": "species",
        "algorithm": "mlp",
        "search": {"lr": [0.01, 0.001, -0.5], "epochs": [2]},
    }
    problem = submit(api, body, status=422)
    assert problem["errors"][0]["loc"] == ["search", "lr", 2], problem
    too_many = submit(
        api, {**body, "search": {"lr": [0.01 * i for i in range(1, 12)], "epochs": list(range(1, 11))}}, status=422
    )
    assert "MLQ_MAX_SEARCH_TRIALS" in too_many["detail"]
    # A grid's trial count was silently ignored (issue 18): now a 422 naming it.
    grid = {"strategy": "grid", "trials": 5, "space": {"lr": [0.01, 0.001]}}
    ignored = submit(api, {**body, "search": grid}, status=422)
    assert ignored["errors"][0]["loc"] == ["search", "trials"] and '"strategy": "random"' in ignored["detail"]
    assert api.get("/v1/jobs?model=iris-bad").get_json()["items"] == []


def test_a_search_ranks_by_the_cv_mean_when_the_split_asks_for_folds(
    api: FlaskClient, harness: JobHarness, workers: list[Any], cancer: str
) -> None:
    body = {
        "model": "cancer-cv",
        "dataset": cancer,
        "target": "diagnosis",
        "task": None,
        "algorithms": {"logistic_regression": {"C": [0.1, 1.0]}, "random_forest": {"n_estimators": [10]}},
        "split": {"cv": 3},
    }
    job = harness.wait(submit(api, body)["id"])
    assert job["status"] == "succeeded", dump(job)
    result = job["result"]
    assert result["rank_by"] == "cv" and result["metric"] == "f1"
    assert all(t["status"] == "succeeded" for t in result["trials"])
    assert result["trials"][0]["score"] == max(t["score"] for t in result["trials"])
    manifest = harness.registry.manifest(TENANT, "cancer-cv", result["version"])
    assert manifest["cv"]["folds"] == 3 and manifest["cv"]["mean"]["f1"] == result["trials"][0]["score"]


def test_a_failed_trial_does_not_fail_the_search(api: FlaskClient, harness: JobHarness, workers: list[Any]) -> None:
    # A numeric label: the API cannot tell classification from regression, so it lets linear_regression through;
    # the worker infers classification from the data and that trial fails. The search registers the other one.
    coded = iris_csv().decode().replace(",setosa", ",0").replace(",versicolor", ",1").replace(",virginica", ",2")
    dataset = harness.save_dataset(coded.encode(), "iris-coded")
    body = {
        "model": "iris-mixed",
        "dataset": dataset,
        "target": "species",
        "algorithms": {"logistic_regression": {}, "linear_regression": {}},
    }
    job = harness.wait(submit(api, body)["id"])
    assert job["status"] == "succeeded", dump(job)
    trials = {t["algorithm"]: t for t in job["result"]["trials"]}
    assert trials["linear_regression"]["status"] == "failed"
    assert "classification" in trials["linear_regression"]["error"]["message"]
    assert job["result"]["algorithm"] == "logistic_regression" and job["result"]["version"] == 1
    assert job["result"]["trials"][0]["algorithm"] == "logistic_regression"


def test_cancelling_a_search_leaves_no_trial_running_and_no_version(
    api: FlaskClient, harness: JobHarness, workers: list[Any], cancer: str
) -> None:
    body = {
        "model": "cancer-cancelled",
        "dataset": cancer,
        "target": "diagnosis",
        "algorithm": "mlp",
        "params": {"epochs": 1000, "batch_size": 4, "early_stopping_patience": 0},
        "search": {"hidden_layers": [[16], [32], [64]]},
    }
    search = submit(api, body)
    deadline = time.monotonic() + SEARCH_TIMEOUT_S
    while not any(t is not None and t["status"] == "running" for t in trials_or_none(harness, search["id"])):
        assert time.monotonic() < deadline, dump(harness.jobs.get(search["id"]))
        time.sleep(0.1)
    response = api.post(f"/v1/jobs/{search['id']}/cancel")
    assert response.status_code == 202, response.get_json()
    job = harness.wait(search["id"])
    assert job["status"] == "cancelled", dump(job)
    trials = trials_or_none(harness, search["id"])
    assert all(t is None or t["status"] == "cancelled" for t in trials), dump(trials)
    with pytest.raises(ResourceNotFound):
        harness.registry.get_model(TENANT, "cancer-cancelled")
    assert api.post(f"/v1/jobs/{search['id']}/cancel").status_code == 409


def test_warm_start_from_a_version_that_does_not_fit_is_a_clear_422(
    api: FlaskClient, harness: JobHarness, iris: str, cancer: str
) -> None:
    path = harness.datasets.path(TENANT, iris)
    train_model(
        data_path=path,
        target="species",
        algorithm="mlp",
        model_name="iris-base",
        registry=harness.registry,
        params={"epochs": 2, "hidden_layers": [8]},
    )
    train_model(
        data_path=path,
        target="species",
        algorithm="logistic_regression",
        model_name="iris-lr-base",
        registry=harness.registry,
    )
    base = {
        "model": "iris-ft",
        "dataset": iris,
        "target": "species",
        "algorithm": "mlp",
        "warm_start": {"model": "iris-base", "version": 1},
    }

    def train(body: dict[str, Any]) -> Any:
        return api.post("/v1/jobs/train", json=body)

    cases: list[tuple[dict[str, Any], list[str]]]
    cases = [
        ({"features": ["petal_length"]}, ["features"]),
        ({"params": {"hidden_layers": [4]}}, ["params", "hidden_layers"]),
        ({"warm_start": {"model": "iris-base", "version": 7}}, ["warm_start", "version"]),
        ({"warm_start": {"model": "iris-lr-base"}}, ["warm_start"]),
        ({"dataset": cancer, "target": "diagnosis"}, ["features"]),
    ]
    for change, loc in cases:
        response = train({**base, **change})
        assert response.status_code == 422, (change, response.get_json())
        assert response.get_json()["errors"][0]["loc"] == loc, response.get_json()
    queued = train({**base, "params": {"epochs": 1}})
    assert queued.status_code == 202, queued.get_json()
    assert request_of(harness.jobs.get(queued.get_json()["id"]))["warm_start"] == {"model": "iris-base", "version": 1}
    # An ONNX export of the base holds no trainable weights: a 422 at submit naming the version it came from, not
    # a worker failure about a missing preprocessor.skops (issue 18).
    exported = optimize_version(
        registry=harness.registry,
        tenant=TENANT,
        name="iris-base",
        version=1,
        method="export",
        params={"format": "onnx"},
        data_path=path,
        device="cpu",
        repeats=1,
    )
    response = train({**base, "warm_start": {"model": "iris-base", "version": exported["version"]}})
    assert response.status_code == 422, response.get_json()
    problem = response.get_json()
    assert problem["errors"][0]["loc"] == ["warm_start", "version"]
    assert "onnx copy" in problem["detail"] and "version 1" in problem["detail"]
