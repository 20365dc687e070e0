"""Path traversal: model names, alias names, dataset ids, job ids and versions from a client never reach the
filesystem unchecked. Raw, percent-encoded, double-encoded, unicode look-alike dots and NUL bytes: each is a
404 or 422 (never a 2xx or 5xx), and nothing outside MLQ_HOME is read, written or deleted (a canary says so)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from api_reliability_support import make_settings, register_model, train_body, upload
from flask.testing import FlaskClient

from api import create_app

# Each is tried as a path segment; the canary lies two and three levels above the places names are joined to.
EVIL = [
    "..",
    ".",
    "...",
    "../canary",
    "../../canary",
    "../../../canary",
    "..%2f..%2fcanary",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fcanary",
    "%252e%252e%252fcanary",
    "..%252f..%252fcanary",
    "..%5c..%5ccanary",
    "..\\..\\canary",
    "%2fetc%2fpasswd",
    "%00",
    "iris%00",
    "iris%00.json",
    "\u2024\u2024",
    "\uff0e\uff0e",
    "\u2024\u2024%2fcanary",
    "%c0%ae%c0%ae",
    "%e2%80%a4%e2%80%a4",
    "canary/",
    "iris/..",
    "a" * 300,
    " ..",
    ".. ",
]


def snapshot(root: Path, skip: Path) -> dict[str, str]:
    """sha256 of every file under root except those under `skip` (MLQ_HOME)."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_relative_to(skip):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def setup(tmp_path: Path, redis_url: str) -> dict[str, Any]:
    # Canaries where a traversal from <home>/models/<tenant>/ or <home>/datasets/<tenant>/ would land.
    home = tmp_path / "a" / "b" / "home"
    settings = make_settings(home, redis_url)
    for where in (tmp_path, tmp_path / "a", tmp_path / "a" / "b", home.parent):
        where.mkdir(parents=True, exist_ok=True)
        (where / "canary").write_text("canary")
        (where / "canary.json").write_text('{"canary": true}')
    (tmp_path / "a" / "canary-dir").mkdir()
    (tmp_path / "a" / "canary-dir" / "meta.json").write_text("{}")
    client = create_app(settings).test_client()
    register_model(settings, name="iris")
    dataset = upload(client)
    return {"client": client, "root": tmp_path, "home": home, "dataset": dataset["id"]}


def attempts(segment: str, dataset: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    predict = {"inputs": [{"sepal_length": 1.0, "island": "x"}]}
    return [
        ("GET", f"/v1/models/{segment}", None),
        ("GET", f"/v1/models/{segment}/versions/1", None),
        ("GET", f"/v1/models/{segment}/versions/1/artifact", None),
        ("DELETE", f"/v1/models/{segment}/versions/1", None),
        ("GET", f"/v1/models/iris/versions/{segment}", None),
        ("GET", f"/v1/models/iris/versions/1{segment}", None),
        ("PUT", f"/v1/models/iris/aliases/{segment}", {"version": 1}),
        ("DELETE", f"/v1/models/iris/aliases/{segment}", None),
        ("PUT", f"/v1/models/{segment}/aliases/production", {"version": 1}),
        ("POST", f"/v1/models/{segment}/predict", predict),
        ("POST", "/v1/models/iris/predict", {**predict, "version": segment}),
        ("GET", f"/v1/datasets/{segment}", None),
        ("DELETE", f"/v1/datasets/{segment}", None),
        ("GET", f"/v1/jobs/{segment}", None),
        ("POST", f"/v1/jobs/{segment}/cancel", None),
        ("POST", "/v1/jobs/train", train_body(segment)),
        ("POST", "/v1/jobs/train", train_body(dataset, model=segment)),
    ]


@pytest.mark.parametrize("segment", EVIL)
def test_a_traversal_attempt_is_refused_and_touches_nothing_outside_home(setup: dict[str, Any], segment: str) -> None:
    client: FlaskClient = setup["client"]
    before = snapshot(setup["root"], setup["home"])
    for method, path, body in attempts(segment, setup["dataset"]):
        response = client.open(path, method=method, json=body)
        if response.status_code == 308:  # werkzeug merges "//" with a redirect; follow it like a client would
            response = client.open(response.headers["Location"], method=method, json=body)
        assert response.status_code in (404, 405, 422), (method, path, response.status_code, response.get_json())
        assert response.content_type == "application/problem+json"
    assert snapshot(setup["root"], setup["home"]) == before
    # The legitimate things are still there.
    assert client.get("/v1/models/iris/versions/1").status_code == 200
    assert client.get(f"/v1/datasets/{setup['dataset']}").status_code == 200


def test_an_upload_name_with_a_path_is_only_a_label(setup: dict[str, Any]) -> None:
    client: FlaskClient = setup["client"]
    before = snapshot(setup["root"], setup["home"])
    for name in ("../../canary", "/etc/passwd", "..\\..\\canary", "\u2024\u2024/canary"):
        meta = upload(client, name=name.replace("/", "%2F").replace("\\", "%5C"))
        assert meta["name"] == name
    files = client.post(
        "/v1/datasets",
        data={"file": (__import__("io").BytesIO(b"a,b\n1,2\n"), "../../canary")},
        content_type="multipart/form-data",
    )
    assert files.status_code == 201 and files.get_json()["name"] == "../../canary"
    assert snapshot(setup["root"], setup["home"]) == before
    stored = [p.name for p in (setup["home"] / "datasets" / "default").iterdir()]
    assert all(name.startswith("ds_") for name in stored), stored


def test_a_name_with_a_nul_byte_in_the_query_is_refused(setup: dict[str, Any]) -> None:
    client: FlaskClient = setup["client"]
    response = client.post("/v1/datasets?name=a%00b", data=b"a,b\n1,2\n", content_type="text/csv")
    assert response.status_code == 422
