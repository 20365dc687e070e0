"""Bearer tokens and tenant isolation: another tenant's datasets, jobs and models are 404s."""

from __future__ import annotations

from api_support import ALICE, BOB, register_model, train_body, upload
from flask.testing import FlaskClient

from store.settings import Settings

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client


def test_a_missing_or_wrong_token_is_a_401_problem_with_www_authenticate(auth_client: FlaskClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dG9rLWFsaWNl"},
        {"Authorization": "Bearer"},
    ):
        response = auth_client.get("/v1/jobs", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.content_type == "application/problem+json"
        assert "tok-alice" not in response.get_data(as_text=True)
    assert auth_client.get("/v1/jobs", headers=ALICE).status_code == 200


def test_the_401_comes_before_any_body_parsing(auth_client: FlaskClient) -> None:
    response = auth_client.post("/v1/jobs/train", data=b"{broken", content_type="application/json")
    assert response.status_code == 401


def test_service_routes_need_no_token(auth_client: FlaskClient) -> None:
    assert auth_client.get("/healthz").status_code == 200
    assert auth_client.get("/openapi.json").status_code == 200
    assert auth_client.get("/metrics").status_code == 200
    assert auth_client.get("/readyz").status_code in (200, 503)


def test_each_tenant_sees_only_its_own_datasets_jobs_and_models(
    auth_client: FlaskClient, auth_settings: Settings
) -> None:
    dataset = upload(auth_client, headers=ALICE)
    job = auth_client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers=ALICE).get_json()
    register_model(auth_settings, tenant="alice")
    row = {"sepal_length": 1.0, "island": "a"}
    # Bob cannot even train on Alice's dataset id.
    assert auth_client.post("/v1/jobs/train", json=train_body(dataset["id"]), headers=BOB).status_code == 404
    for method, url, body in [
        ("get", f"/v1/datasets/{dataset['id']}", None),
        ("delete", f"/v1/datasets/{dataset['id']}", None),
        ("get", f"/v1/jobs/{job['id']}", None),
        ("post", f"/v1/jobs/{job['id']}/cancel", None),
        ("get", "/v1/models/iris", None),
        ("get", "/v1/models/iris/versions/1", None),
        ("get", "/v1/models/iris/versions/1/artifact", None),
        ("put", "/v1/models/iris/aliases/production", {"version": 1}),
        ("delete", "/v1/models/iris/versions/1", None),
        ("post", "/v1/models/iris/predict", {"inputs": [row]}),
    ]:
        response = getattr(auth_client, method)(url, json=body, headers=BOB)
        assert response.status_code == 404, (method, url, response.get_json())
    assert auth_client.get("/v1/jobs", headers=BOB).get_json()["items"] == []
    assert auth_client.get("/v1/models", headers=BOB).get_json()["items"] == []
    # Alice still has everything.
    assert auth_client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()["status"] == "queued"
    assert auth_client.get("/v1/models/iris/versions/1", headers=ALICE).status_code == 200
    assert auth_client.get(f"/v1/datasets/{dataset['id']}", headers=ALICE).status_code == 200


def test_idempotency_keys_are_per_tenant(auth_client: FlaskClient) -> None:
    a = upload(auth_client, headers=ALICE)
    b = upload(auth_client, headers=BOB)
    key = {"Idempotency-Key": "same"}
    ja = auth_client.post("/v1/jobs/train", json=train_body(a["id"]), headers={**ALICE, **key})
    jb = auth_client.post("/v1/jobs/train", json=train_body(b["id"]), headers={**BOB, **key})
    assert ja.status_code == jb.status_code == 202
    assert ja.get_json()["id"] != jb.get_json()["id"]
