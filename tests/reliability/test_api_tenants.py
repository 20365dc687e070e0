"""Tenant isolation and tokens (OWASP API1/API2): every resource route with another tenant's token is a 404 with
no side effect, without or with a wrong token a 401; tokens never reach a log; /metrics and /readyz say nothing
about tenants."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_reliability_support import (
    ALICE,
    BOB,
    TOKENS,
    gunicorn,
    make_settings,
    register_model,
    token_env,
    train_body,
    upload,
)
from flask.testing import FlaskClient

from api import create_app, publisher
from store.celery_config import make_celery
from store.settings import Settings

MODEL = "secret-model-x7"
DATASET_NAME = "secret-dataset-q3"


@pytest.fixture
def world(tmp_path: Path, redis_url: str) -> dict[str, Any]:
    """Alice owns a dataset, a queued job, a finished job and a model with an alias; Bob owns nothing."""
    settings = make_settings(tmp_path / "home", redis_url, auth_tokens=TOKENS)
    client = create_app(settings).test_client()
    dataset = upload(client, headers=ALICE, name=DATASET_NAME)
    register_model(settings, tenant="alice", name=MODEL)
    assert client.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 1}, headers=ALICE).status_code == 200
    queued = client.post("/v1/jobs/train", json=train_body(dataset["id"], model=MODEL), headers=ALICE).get_json()
    finished = client.post("/v1/jobs/train", json=train_body(dataset["id"], model=MODEL), headers=ALICE).get_json()
    assert client.post(f"/v1/jobs/{finished['id']}/cancel", headers=ALICE).status_code == 202
    return {
        "settings": settings,
        "client": client,
        "dataset": dataset["id"],
        "queued": queued["id"],
        "finished": finished["id"],
    }


def resource_routes(w: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, JSON body) of every route that names one of Alice's resources."""
    ds, q, f = w["dataset"], w["queued"], w["finished"]
    predict = {"inputs": [{"sepal_length": 1.0, "island": "x"}]}
    return [
        ("GET", f"/v1/datasets/{ds}", None),
        ("DELETE", f"/v1/datasets/{ds}", None),
        ("GET", f"/v1/jobs/{q}", None),
        ("GET", f"/v1/jobs/{f}", None),
        ("POST", f"/v1/jobs/{q}/cancel", None),
        ("POST", f"/v1/jobs/{f}/cancel", None),
        ("POST", "/v1/jobs/train", train_body(ds, model="bobs-model")),
        ("GET", f"/v1/models/{MODEL}", None),
        ("GET", f"/v1/models/{MODEL}/versions/1", None),
        ("GET", f"/v1/models/{MODEL}/versions/1/artifact", None),
        ("DELETE", f"/v1/models/{MODEL}/versions/1", None),
        ("PUT", f"/v1/models/{MODEL}/aliases/staging", {"version": 1}),
        ("DELETE", f"/v1/models/{MODEL}/aliases/production", None),
        ("POST", f"/v1/models/{MODEL}/predict", predict),
    ]


def call(client: FlaskClient, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> Any:
    return client.open(path, method=method, json=body, headers=headers)


def test_every_resource_route_answers_404_to_another_tenant_and_changes_nothing(world: dict[str, Any]) -> None:
    client = world["client"]
    for method, path, body in resource_routes(world):
        response = call(client, method, path, body, BOB)
        assert response.status_code == 404, (method, path, response.get_json())
        assert response.content_type == "application/problem+json"
        # The answer is the same as for something that does not exist at all: nothing about Alice leaks.
        assert "alice" not in response.get_data(as_text=True)
    # Nothing happened to Alice's things.
    assert client.get(f"/v1/datasets/{world['dataset']}", headers=ALICE).status_code == 200
    assert client.get(f"/v1/jobs/{world['queued']}", headers=ALICE).get_json()["status"] == "queued"
    model = client.get(f"/v1/models/{MODEL}", headers=ALICE).get_json()
    assert model["aliases"] == {"production": 1} and model["latest_version"] == 1


def test_lists_never_show_another_tenants_resources(world: dict[str, Any]) -> None:
    client = world["client"]
    for path in ("/v1/datasets", "/v1/jobs", "/v1/models", f"/v1/jobs?model={MODEL}"):
        response = client.get(path, headers=BOB)
        assert response.status_code == 200
        assert response.get_json()["items"] == [], path
        assert len(client.get(path, headers=ALICE).get_json()["items"]) >= 1, path


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dG9rLWFsaWNlOg=="},
        {"Authorization": "tok-alice"},
        {"Authorization": "Bearer tok-alicE"},
        {"Authorization": "Bearer tok-alice-and-more"},
        {"Authorization": "Bearer " + "x" * 8000},
        {"Authorization": "Bearer tök-alice"},
    ],
    ids=["none", "empty", "basic", "no-scheme", "wrong-case", "longer", "huge", "unicode"],
)
def test_every_resource_route_answers_401_without_a_valid_token(world: dict[str, Any], headers: dict[str, str]) -> None:
    client = world["client"]
    routes = resource_routes(world) + [
        ("GET", "/v1/datasets", None),
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/datasets", None),
    ]
    for method, path, body in routes:
        response = call(client, method, path, body, headers)
        assert response.status_code == 401, (method, path, response.get_json())
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="mlqueue"')
    assert client.get(f"/v1/jobs/{world['queued']}", headers=ALICE).get_json()["status"] == "queued"


def test_a_token_never_appears_in_logs_or_answers(world: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    client = world["client"]
    secret = "tok-alice"
    # A queue that is down makes the API log an error while it handles an authenticated request.
    svc = client.application.extensions["mlq"]
    dead = Settings(redis_url="redis://127.0.0.1:1/0")
    client.application.extensions["mlq"] = dataclasses.replace(svc, celery=publisher(make_celery(dead)))
    with caplog.at_level(logging.DEBUG):
        ok = client.get(f"/v1/jobs/{world['queued']}", headers=ALICE)
        wrong = client.get("/v1/jobs", headers={"Authorization": "Bearer tok-alice-wrong"})
        bad_body = client.post("/v1/jobs/train", data="{", content_type="application/json", headers=ALICE)
        down = client.post("/v1/jobs/train", json=train_body(world["dataset"], model="m"), headers=ALICE)
    assert (ok.status_code, wrong.status_code, bad_body.status_code, down.status_code) == (200, 401, 400, 503)
    assert any(r.levelno >= logging.ERROR for r in caplog.records), "the failed enqueue was not logged"
    logged = "\n".join(r.getMessage() + repr(r.args) + repr(r.exc_text) for r in caplog.records)
    assert secret not in logged
    for response in (ok, wrong, bad_body, down):
        assert secret not in response.get_data(as_text=True)
        assert not any(secret in value for _, value in response.headers.items())


def test_a_token_never_appears_in_the_servers_access_or_debug_log(tmp_path: Path, redis_url: str) -> None:
    env = {"MLQ_REDIS_URL": redis_url, "MLQ_HOME": str(tmp_path / "home"), "MLQ_AUTH_TOKENS": token_env(TOKENS)}
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, log, extra_args=("--access-logfile", "-", "--log-level", "debug")) as base:
        assert httpx.get(base + "/v1/jobs", headers=ALICE).status_code == 200
        assert httpx.get(base + "/v1/jobs", headers={"Authorization": "Bearer tok-bob-wrong"}).status_code == 401
        assert httpx.get(base + "/v1/jobs?limit=0", headers=BOB).status_code == 422
    text = log.read_text(errors="replace")
    assert "GET /v1/jobs" in text  # the access log did record the requests
    assert "tok-alice" not in text and "tok-bob" not in text


def test_metrics_and_readiness_expose_no_tenant_model_or_dataset_names(world: dict[str, Any]) -> None:
    client = world["client"]
    client.get(f"/v1/jobs/{world['queued']}", headers=ALICE)
    client.get(f"/v1/models/{MODEL}", headers=BOB)
    texts = [client.get("/metrics").get_data(as_text=True), client.get("/readyz").get_data(as_text=True)]
    assert "mlq_jobs_total" in texts[0]  # the scrape did read the job counters
    for text in texts:
        for private in ("alice", "bob", MODEL, DATASET_NAME, world["dataset"], world["queued"], "tok-"):
            assert private not in text, private


def test_a_tenant_name_that_is_not_a_safe_name_is_refused_at_start(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path / "home", redis_url, auth_tokens={"tok": "../etc"})
    with pytest.raises(ValueError, match="MLQ_AUTH_TOKENS"):
        create_app(settings)


def test_without_configured_tokens_every_request_is_the_default_tenant(tmp_path: Path, redis_url: str) -> None:
    settings: Settings = make_settings(tmp_path / "home", redis_url)
    client = create_app(settings).test_client()
    dataset = upload(client)
    assert client.get(f"/v1/datasets/{dataset['id']}", headers={"Authorization": "Bearer anything"}).status_code == 200
