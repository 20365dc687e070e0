"""Oversized uploads: over MLQ_MAX_UPLOAD_MB with a Content-Length, as multipart, and chunked (under a real
gunicorn, where werkzeug would otherwise hand out a silently truncated body) → 413 (or 411), never a truncated
201; over MLQ_MAX_ROWS / MLQ_MAX_COLUMNS → 413 naming the setting. A refused upload leaves no file behind."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_reliability_support import gunicorn, make_settings
from flask.testing import FlaskClient

from api import create_app

MB = 1024 * 1024


def csv_of(size: int, columns: int = 4) -> bytes:
    """A valid CSV of at least `size` bytes (numbers only)."""
    header = ",".join(f"c{i}" for i in range(columns)) + "\n"
    row = ",".join("1.5" for _ in range(columns)) + "\n"
    return (header + row * max(1, -(-(size - len(header)) // len(row)))).encode()


def leftovers(home: Path) -> list[Path]:
    root = home / "datasets"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def client(home: Path, redis_url: str) -> FlaskClient:
    return create_app(make_settings(home, redis_url, max_upload_mb=1, max_rows=1000, max_columns=10)).test_client()


def test_a_raw_body_over_the_limit_is_a_413_whatever_its_size(home: Path, redis_url: str) -> None:
    client = create_app(make_settings(home, redis_url, max_upload_mb=1)).test_client()
    for size in (MB + 10, 3 * MB):  # counted while streaming; refused from Content-Length alone
        response = client.post("/v1/datasets", data=csv_of(size), content_type="text/csv")
        assert response.status_code == 413, size
        assert "MLQ_MAX_UPLOAD_MB" in response.get_json()["detail"]
    assert leftovers(home) == []


def test_a_multipart_file_over_the_limit_is_a_413(client: FlaskClient, home: Path) -> None:
    data = {"file": (io.BytesIO(csv_of(MB + 10)), "big.csv")}
    response = client.post("/v1/datasets", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    assert leftovers(home) == []


def test_rows_over_the_setting_are_a_413_naming_it(client: FlaskClient, home: Path) -> None:
    body = b"a,b\n" + b"1,2\n" * 1001
    response = client.post("/v1/datasets", data=body, content_type="text/csv")
    assert response.status_code == 413
    assert response.get_json()["code"] == "too_many_rows" and "MLQ_MAX_ROWS" in response.get_json()["detail"]
    assert client.post("/v1/datasets", data=b"a,b\n" + b"1,2\n" * 1000, content_type="text/csv").status_code == 201


def test_columns_over_the_setting_are_a_413_naming_it(client: FlaskClient, home: Path) -> None:
    response = client.post("/v1/datasets", data=csv_of(200, columns=11), content_type="text/csv")
    assert response.status_code == 413
    assert response.get_json()["code"] == "too_many_columns"
    assert "MLQ_MAX_COLUMNS" in response.get_json()["detail"]
    assert client.post("/v1/datasets", data=csv_of(200, columns=10), content_type="text/csv").status_code == 201
    assert len(leftovers(home)) == 2  # data.csv + meta.json of the accepted one only


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import os

    tmp = tmp_path_factory.mktemp("uploads")
    url = os.environ.get("MLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    env = {"MLQ_REDIS_URL": url, "MLQ_HOME": str(tmp / "home"), "MLQ_MAX_UPLOAD_MB": "1"}
    with gunicorn(env, tmp / "gunicorn.log") as base:
        yield base, tmp / "home"


def test_a_chunked_raw_body_over_the_limit_is_refused_never_truncated(server: tuple[str, Path]) -> None:
    base, home = server
    before = leftovers(home)
    for size in (MB + 10, 2 * MB + 10, 4 * MB):  # just over; just over the hard cap (limit + 1 MiB); far over
        response = httpx.post(
            base + "/v1/datasets", content=chunks(csv_of(size)), headers={"Content-Type": "text/csv"}, timeout=30
        )
        assert "chunked" in response.request.headers.get("Transfer-Encoding", "")
        assert response.status_code in (411, 413), (size, response.status_code, response.text[:300])
        assert response.headers["Content-Type"] == "application/problem+json"
    assert leftovers(home) == before


def test_a_chunked_raw_body_under_the_limit_is_stored_whole(server: tuple[str, Path]) -> None:
    base, _ = server
    data = csv_of(MB - 1000)
    response = httpx.post(base + "/v1/datasets", content=chunks(data), headers={"Content-Type": "text/csv"}, timeout=30)
    assert response.status_code == 201, response.text[:300]
    assert response.json()["size_bytes"] == len(data)
    assert response.json()["rows"] == data.count(b"\n") - 1


def test_a_chunked_multipart_body_over_the_limit_is_refused(server: tuple[str, Path]) -> None:
    base, home = server
    before = leftovers(home)
    for size in (MB + 10, 4 * MB):
        request = httpx.Request("POST", base + "/v1/datasets", files={"file": ("big.csv", csv_of(size))})
        body = request.read()
        headers = {"Content-Type": request.headers["Content-Type"]}
        response = httpx.post(base + "/v1/datasets", content=chunks(body), headers=headers, timeout=30)
        assert response.status_code in (411, 413), (size, response.status_code, response.text[:300])
    assert leftovers(home) == before
