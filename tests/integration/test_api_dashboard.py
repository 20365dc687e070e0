"""What the API does for the dashboard: its static files at /ui/, the algorithm schemas the training form is built
from, and the cross-origin refusal that keeps a page on another site from cancelling jobs or moving aliases."""

from __future__ import annotations

from api_support import ALICE, register_model, train_body, upload
from flask.testing import FlaskClient

from api.csrf import cross_origin
from store.settings import Settings
from training.params import ALGORITHM_TASKS, PARAM_SCHEMAS

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client

CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}


def test_the_root_redirects_to_the_dashboard_served_with_a_strict_csp(client: FlaskClient) -> None:
    assert client.get("/").headers["Location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200
    assert '<script type="module" src="app.js">' in page.get_data(as_text=True)
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["Cache-Control"] == "no-cache"
    script = client.get("/ui/pages/jobs.js")
    assert script.status_code == 200 and script.mimetype in ("text/javascript", "application/javascript")
    assert client.get("/ui/pages/jobs.js", headers={"If-None-Match": script.headers["ETag"]}).status_code == 304


def test_no_file_outside_the_dashboard_directory_is_served(client: FlaskClient) -> None:
    for path in ("/ui/../__init__.py", "/ui/%2e%2e/__init__.py", "/ui/..%2fauth.py", "/ui/missing.js"):
        assert client.get(path).status_code == 404, path


def test_the_dashboard_needs_no_token_but_its_api_calls_do(auth_client: FlaskClient) -> None:
    assert auth_client.get("/ui/").status_code == 200  # static files hold no tenant data
    assert auth_client.get("/v1/algorithms").status_code == 401
    assert auth_client.get("/v1/algorithms", headers=ALICE).status_code == 200


def test_algorithms_lists_every_algorithm_with_its_tasks_and_parameter_schema(client: FlaskClient) -> None:
    items = client.get("/v1/algorithms").get_json()["items"]
    assert [a["name"] for a in items] == list(PARAM_SCHEMAS)
    by_name = {a["name"]: a for a in items}
    for name, schema in PARAM_SCHEMAS.items():
        assert by_name[name]["tasks"] == list(ALGORITHM_TASKS[name])
        assert set(by_name[name]["params"]) == set(schema)
    epochs = by_name["mlp"]["params"]["epochs"]
    assert (epochs["kind"], epochs["default"], epochs["minimum"]) == ("int", 20, 1)
    assert by_name["random_forest"]["params"]["class_weight"]["choices"] == ["balanced", None]
    assert "/v1/algorithms" in client.get("/openapi.json").get_json()["paths"]


def test_a_cross_site_browser_request_cannot_cancel_a_job_or_move_an_alias(
    client: FlaskClient, settings: Settings
) -> None:
    dataset = upload(client)["id"]
    job = client.post("/v1/jobs/train", json=train_body(dataset)).get_json()
    register_model(settings)
    for method, path, body in (
        ("POST", f"/v1/jobs/{job['id']}/cancel", None),
        ("PUT", "/v1/models/iris/aliases/production", {"version": 1}),
        ("DELETE", "/v1/models/iris/versions/1", None),
    ):
        # A form post from another site: no preflight, text/plain or form content type, the browser's headers.
        response = client.open(path, method=method, data="version=1", content_type="text/plain", headers=CROSS_SITE)
        assert response.status_code == 403, (path, response.get_json())
        assert response.get_json()["code"] == "cross_origin"
        same = client.open(path, method=method, json=body, headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code in (200, 202, 204, 409), (path, same.get_json())
    assert client.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "cancelled"


def test_api_clients_without_browser_headers_are_not_affected(client: FlaskClient) -> None:
    assert client.post("/v1/datasets", data=b"a,b\n1,2\n", content_type="text/csv").status_code == 201
    # Reading is never refused: a cross-site GET cannot read the answer anyway (no CORS headers).
    assert client.get("/v1/jobs", headers=CROSS_SITE).status_code == 200


def test_the_cross_origin_rule() -> None:
    assert not cross_origin("POST", None, None, "api:8000")  # curl, httpx, mlqueue.Client
    assert not cross_origin("POST", "same-origin", "http://api:8000", "api:8000")
    assert not cross_origin("POST", "none", None, "api:8000")  # typed by the user
    assert cross_origin("POST", "same-site", "http://other.api:8000", "api:8000")
    assert cross_origin("DELETE", "cross-site", None, "api:8000")
    # Browsers without Fetch Metadata: the Origin header decides.
    assert not cross_origin("PUT", None, "http://API:8000", "api:8000")
    assert cross_origin("PUT", None, "http://api:8001", "api:8000")
    assert cross_origin("POST", None, "null", "api:8000")  # a sandboxed frame or a file: page
    assert not cross_origin("GET", "cross-site", "https://evil.example", "api:8000")
