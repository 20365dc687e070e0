"""A corpus of malformed JSON and CSV bodies: each gets a 4xx problem+json that says what is wrong, never a 5xx,
and nothing is queued or stored for it. A few odd-but-valid bodies (BOM, CR newlines, formula cells) are
accepted, and formula cells are stored verbatim (no route returns user CSV, so there is nothing to escape)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from api_reliability_support import make_settings, register_model, upload
from flask.testing import FlaskClient

from api import create_app

DEEP = 100_000


def train_json(ds: str, **fields: Any) -> str:
    import json

    body = {"model": "m", "dataset": ds, "target": "species", "algorithm": "logistic_regression", **fields}
    return json.dumps(body)


# (id, raw body or a function of the dataset id). Every one must be refused with a 4xx.
JSON_CORPUS: list[tuple[str, Any]] = [
    ("empty", b""),
    ("whitespace", b"  \n "),
    ("truncated", b'{"model": "m", "dataset": '),
    ("truncated-string", b'{"model": "m'),
    ("trailing-comma", b'{"model": "m",}'),
    ("single-quotes", b"{'model': 'm'}"),
    ("array", b"[]"),
    ("null", b"null"),
    ("number", b"1"),
    ("string", b'"train"'),
    ("nan", b'{"model": NaN}'),
    ("infinity", lambda ds: train_json(ds).replace('"m"', "Infinity", 1).encode()),
    ("minus-infinity-param", lambda ds: train_json(ds)[:-1].encode() + b', "params": {"C": -Infinity}}'),
    ("huge-float", lambda ds: train_json(ds)[:-1].encode() + b', "params": {"C": 1e999}}'),
    ("huge-int", lambda ds: train_json(ds)[:-1].encode() + b', "params": {"max_iter": ' + b"9" * 5000 + b"}}"),
    ("huge-split", lambda ds: train_json(ds)[:-1].encode() + b', "split": {"test": 1e999}}'),
    ("negative-seed", lambda ds: train_json(ds, split={"seed": -1}).encode()),
    ("deep-array", b"[" * DEEP + b"]" * DEEP),
    ("deep-object", b'{"a":' * DEEP + b"1" + b"}" * DEEP),
    (
        "deep-below-recursion-limit",
        lambda ds: train_json(ds)[:-1].encode() + b', "params": {"C": ' + b"[" * 900 + b"]" * 900 + b"}}",
    ),
    ("deep-params", lambda ds: train_json(ds)[:-1].encode() + b', "params": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    ("nul-byte", b'{"model": "m\x00"}'),
    ("nul-escape-in-name", lambda ds: train_json(ds, model="m\u0000x").encode()),
    ("invalid-utf8", b'{"model": "\xff\xfe"}'),
    ("utf16", '{"model": "m"}'.encode("utf-16")),
    ("lone-surrogate", lambda ds: train_json(ds, target="\ud800").encode()),
    ("binary", bytes(range(256)) * 4),
    ("wrong-types", lambda ds: train_json(ds, model=1, target=["x"], features="x").encode()),
    ("bool-as-string", lambda ds: train_json(ds, preprocessing={"scale": "true"}).encode()),
    ("number-as-string", lambda ds: train_json(ds, split={"test": "0.2"}).encode()),
    ("mass-assignment", lambda ds: train_json(ds, tenant="other", status="succeeded").encode()),
    ("unknown-algorithm", lambda ds: train_json(ds, algorithm="rm -rf").encode()),
    ("params-not-object", lambda ds: train_json(ds, params=[1, 2]).encode()),
    ("huge-string", lambda ds: train_json(ds, target="x" * 2_000_000).encode()),
    ("many-features", lambda ds: train_json(ds, features=["x"] * 20_000).encode()),
    ("duplicate-keys", lambda ds: train_json(ds)[:-1].encode() + b', "algorithm": "nope"}'),
    ("missing-everything", b"{}"),
]

PREDICT_CORPUS: list[tuple[str, bytes]] = [
    ("no-inputs", b'{"inputs": []}'),
    ("inputs-not-list", b'{"inputs": {"a": 1}}'),
    ("row-scalar", b'{"inputs": [1, 2]}'),
    ("nested-value", b'{"inputs": [{"sepal_length": {"x": 1}, "island": "a"}]}'),
    ("string-for-number", b'{"inputs": [{"sepal_length": "1.0", "island": "a"}]}'),
    ("huge-number", b'{"inputs": [{"sepal_length": 1e999, "island": "a"}], "postprocess": {"top_k": 1e999}}'),
    ("nan-row", b'{"inputs": [{"sepal_length": NaN, "island": "a"}]}'),
    ("deep-row", b'{"inputs": [' + b"[" * DEEP + b"]" * DEEP + b"]}"),
    ("bad-version", b'{"inputs": [[1.0, "a"]], "version": {"x": 1}}'),
    ("bad-postprocess", b'{"inputs": [[1.0, "a"]], "postprocess": {"output": "all", "threshold": 2}}'),
    ("too-long-row", b'{"inputs": [[1.0, "a", 3]]}'),
    ("truncated", b'{"inputs": [[1.0, '),
]

CSV_CORPUS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("only-newlines", b"\n\n\n"),
    ("header-only", b"a,b,c\n"),
    ("ragged-long", b"a,b\n1,2\n3,4,5\n"),
    ("ragged-short", b"a,b,c\n1,2,3\n4\n"),
    ("duplicate-header", b"a,a\n1,2\n"),
    ("empty-header-name", b"a,,c\n1,2,3\n"),
    ("unclosed-quote", b'a,b\n"1,2\n3,4\n'),
    ("nul-bytes", b"a,b\n1,\x002\n"),
    ("invalid-utf8", b"a,b\n\xff\xfe,2\n"),
    ("utf16", "a,b\n1,2\n".encode("utf-16")),
    ("latin1", "name,city\nJosé,Málaga\n".encode("latin-1")),
    ("binary", bytes(range(256)) * 64),
    ("gzip", b"\x1f\x8b\x08\x00" + bytes(200)),
    ("huge-field", b"a,b\n" + b"x" * 200_000 + b",1\n"),
]

# Odd but valid: accepted, stored verbatim.
CSV_ACCEPTED: list[tuple[str, bytes, int]] = [
    ("bom", b"\xef\xbb\xbfa,b\n1,2\n", 1),
    ("cr-newlines", b"a,b\r1,2\r3,4\r", 2),
    ("crlf", b"a,b\r\n1,2\r\n", 1),
    ("quoted-newline", b'a,b\n"x\ny",2\n', 1),
    ("quote-in-unquoted-field", b'a,b\n1,2"3\n', 1),
    ("formula-cells", b'a,b\n=1+2,+SUM(A1)\n-2+3,@cmd\n"\tX","\rX"\n";=1+2",=HYPERLINK("http://x")\n', 4),
]


@pytest.fixture
def app_client(tmp_path: Path, redis_url: str) -> tuple[FlaskClient, str, Path]:
    settings = make_settings(tmp_path / "home", redis_url, max_upload_mb=2)
    register_model(settings)
    client = create_app(settings).test_client()
    return client, upload(client)["id"], settings.home


def assert_problem(response: Any, what: str) -> None:
    assert 400 <= response.status_code < 500, (what, response.status_code, response.get_data(as_text=True)[:300])
    assert response.content_type == "application/problem+json", what
    problem = response.get_json()
    assert problem["status"] == response.status_code and problem["detail"], what


@pytest.mark.parametrize(("name", "body"), JSON_CORPUS, ids=[c[0] for c in JSON_CORPUS])
def test_a_malformed_training_body_is_a_4xx_problem(
    app_client: tuple[FlaskClient, str, Path], redis_client: redis.Redis, name: str, body: Any
) -> None:
    client, ds, _ = app_client
    raw = body(ds) if callable(body) else body
    response = client.post("/v1/jobs/train", data=raw, content_type="application/json")
    assert_problem(response, name)
    assert redis_client.llen("train") == 0  # nothing was queued


@pytest.mark.parametrize(("name", "body"), PREDICT_CORPUS, ids=[c[0] for c in PREDICT_CORPUS])
def test_a_malformed_predict_body_is_a_4xx_problem(
    app_client: tuple[FlaskClient, str, Path], name: str, body: bytes
) -> None:
    client, _, _ = app_client
    response = client.post("/v1/models/iris/predict", data=body, content_type="application/json")
    assert_problem(response, name)


@pytest.mark.parametrize("body", [b"{", b"[" * DEEP, b'{"version": "1"}', b'{"version": 1e999}', b"\xff"])
def test_a_malformed_alias_body_is_a_4xx_problem(app_client: tuple[FlaskClient, str, Path], body: bytes) -> None:
    client, _, _ = app_client
    assert_problem(client.put("/v1/models/iris/aliases/prod", data=body, content_type="application/json"), "alias")


@pytest.mark.parametrize(("name", "body"), CSV_CORPUS, ids=[c[0] for c in CSV_CORPUS])
def test_a_malformed_csv_is_a_4xx_problem_and_stores_nothing(
    app_client: tuple[FlaskClient, str, Path], name: str, body: bytes
) -> None:
    client, _, home = app_client
    before = sorted(p.name for p in (home / "datasets" / "default").iterdir())
    for response in (
        client.post("/v1/datasets", data=body, content_type="text/csv"),
        client.post(
            "/v1/datasets", data={"file": (__import__("io").BytesIO(body), "x.csv")}, content_type="multipart/form-data"
        ),
    ):
        assert_problem(response, name)
    assert sorted(p.name for p in (home / "datasets" / "default").iterdir()) == before


@pytest.mark.parametrize(("name", "body", "rows"), CSV_ACCEPTED, ids=[c[0] for c in CSV_ACCEPTED])
def test_an_odd_but_valid_csv_is_stored_verbatim(
    app_client: tuple[FlaskClient, str, Path], name: str, body: bytes, rows: int
) -> None:
    client, _, home = app_client
    response = client.post("/v1/datasets", data=body, content_type="text/csv")
    assert response.status_code == 201, (name, response.get_json())
    meta = response.get_json()
    assert meta["rows"] == rows and [c["name"] for c in meta["columns"]] == ["a", "b"]
    stored = home / "datasets" / "default" / meta["id"] / "data.csv"
    assert stored.read_bytes() == body  # stored as sent: formula cells are data, never rewritten


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", "", "multipart/form-data"]
)
def test_a_json_route_with_another_content_type_is_a_415(
    app_client: tuple[FlaskClient, str, Path], content_type: str
) -> None:
    client, ds, _ = app_client
    response = client.post("/v1/jobs/train", data=train_json(ds), content_type=content_type)
    assert response.status_code == 415
    assert_problem(response, content_type)
