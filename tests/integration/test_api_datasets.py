"""Datasets over HTTP: upload (raw and multipart), the meta it answers, limits, parse errors, list, delete."""

from __future__ import annotations

import hashlib
import io

import pytest
from api_support import ALICE, BOB, IRIS_CSV, upload
from flask.testing import FlaskClient

pytest_plugins = ["api_fixtures"]  # the shared fixtures: settings, client, auth_settings, auth_client


def test_a_raw_csv_upload_answers_201_with_rows_columns_dtypes_missing_and_sha256(client: FlaskClient) -> None:
    meta = upload(client, name="iris-small")
    assert meta["id"].startswith("ds_")
    assert meta["name"] == "iris-small"
    assert meta["rows"] == 12
    assert meta["size_bytes"] == len(IRIS_CSV.encode())
    assert meta["sha256"] == hashlib.sha256(IRIS_CSV.encode()).hexdigest()
    columns = {c["name"]: c for c in meta["columns"]}
    assert list(columns) == ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    assert columns["sepal_length"] == {"name": "sepal_length", "dtype": "number", "missing": 0, "distinct": 12}
    assert columns["sepal_width"]["missing"] == 1
    assert columns["species"]["dtype"] == "string" and columns["species"]["distinct"] == 3
    assert meta["created_at"].endswith("Z")
    assert client.get(f"/v1/datasets/{meta['id']}").get_json() == meta


def test_a_multipart_upload_takes_the_file_field_and_its_file_name(client: FlaskClient) -> None:
    response = client.post(
        "/v1/datasets", data={"file": (io.BytesIO(IRIS_CSV.encode()), "iris.csv")}, content_type="multipart/form-data"
    )
    assert response.status_code == 201
    assert response.get_json()["name"] == "iris.csv"
    assert response.get_json()["rows"] == 12


def test_a_multipart_upload_without_a_file_field_is_a_422(client: FlaskClient) -> None:
    response = client.post("/v1/datasets", data={"other": "x"}, content_type="multipart/form-data")
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["loc"] == ["body", "file"]


def test_an_upload_over_the_limit_is_a_413_problem(client: FlaskClient) -> None:
    big = "a,b\n" + "1,2\n" * 300_000  # 1.2 MB > the 1 MB limit of these settings
    response = client.post("/v1/datasets", data=big.encode(), content_type="text/csv")
    assert response.status_code == 413
    assert response.content_type == "application/problem+json"
    assert client.get("/v1/datasets").get_json()["items"] == []


def test_a_chunked_upload_over_the_limit_without_content_length_is_a_413_not_a_truncated_dataset(
    client: FlaskClient,
) -> None:
    big = ("a,b\n" + "1,2\n" * 300_000).encode()
    # What gunicorn hands over for Transfer-Encoding: chunked: no Content-Length, the server ends the stream.
    response = client.post(
        "/v1/datasets",
        input_stream=io.BytesIO(big),
        content_type="text/csv",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert client.get("/v1/datasets").get_json()["items"] == []


def test_a_small_chunked_upload_is_stored_whole(client: FlaskClient) -> None:
    response = client.post(
        "/v1/datasets",
        input_stream=io.BytesIO(IRIS_CSV.encode()),
        content_type="text/csv",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 201
    assert response.get_json()["rows"] == 12


def test_a_wrong_content_type_is_a_415(client: FlaskClient) -> None:
    response = client.post("/v1/datasets", json={"a": 1})
    assert response.status_code == 415
    assert response.get_json()["status"] == 415


def test_a_row_with_too_many_fields_is_a_422_naming_the_line(client: FlaskClient) -> None:
    response = client.post("/v1/datasets", data=b"a,b\n1,2\n3,4,5\n", content_type="text/csv")
    assert response.status_code == 422
    assert "line 3" in response.get_json()["detail"]


def test_an_empty_file_and_a_header_without_rows_are_refused(client: FlaskClient) -> None:
    empty = client.post(
        "/v1/datasets", data={"file": (io.BytesIO(b""), "empty.csv")}, content_type="multipart/form-data"
    )
    assert empty.status_code == 422
    assert "empty" in empty.get_json()["detail"]
    response = client.post("/v1/datasets", data=b"a,b\n", content_type="text/csv")
    assert response.status_code == 422
    assert "no data rows" in response.get_json()["detail"]


@pytest.mark.parametrize(("sep", "word"), [(";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")])
def test_a_file_separated_by_something_else_than_commas_is_refused_with_how_to_convert_it(
    client: FlaskClient, sep: str, word: str
) -> None:
    body = sep.join(["a", "b", "c"]) + "\n" + sep.join(["1", "2", "3"]) + "\n"
    response = client.post("/v1/datasets", data=body.encode(), content_type="text/csv")
    assert response.status_code == 422
    problem = response.get_json()
    assert f"separated by {word}, not commas" in problem["detail"] and "to_csv" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["file", "line", 1]


def test_a_json_file_is_refused_as_json_not_as_a_header_without_rows(client: FlaskClient) -> None:
    for body in (b'[{"a": 1, "b": 2}]', b'\n  {"rows": [[1, 2]]}'):
        response = client.post(
            "/v1/datasets", data={"file": (io.BytesIO(body), "rows.json")}, content_type="multipart/form-data"
        )
        assert response.status_code == 422
        assert "looks like JSON, not CSV" in response.get_json()["detail"]


def test_one_column_whose_name_holds_a_semicolon_among_others_is_still_a_csv(client: FlaskClient) -> None:
    response = client.post("/v1/datasets", data=b"a;b,c\n1,2\n", content_type="text/csv")
    assert response.status_code == 201
    assert [c["name"] for c in response.get_json()["columns"]] == ["a;b", "c"]


def test_datasets_are_listed_newest_first_with_a_cursor(client: FlaskClient) -> None:
    ids = [upload(client, name=f"d{i}")["id"] for i in range(3)]
    first = client.get("/v1/datasets?limit=2").get_json()
    assert [d["id"] for d in first["items"]] == ids[::-1][:2]
    second = client.get(f"/v1/datasets?limit=2&cursor={first['next_cursor']}").get_json()
    assert [d["id"] for d in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None
    assert client.get("/v1/datasets?cursor=garbage").status_code == 400
    assert client.get("/v1/datasets?limit=0").status_code == 422


def test_a_deleted_dataset_is_gone(client: FlaskClient) -> None:
    meta = upload(client)
    assert client.delete(f"/v1/datasets/{meta['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{meta['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{meta['id']}").status_code == 404


def test_a_path_traversal_id_is_a_plain_404(client: FlaskClient) -> None:
    assert client.get("/v1/datasets/..%2F..%2Fetc").status_code == 404
    assert client.get("/v1/datasets/ds_../../x").status_code == 404


def test_another_tenants_dataset_is_a_404_for_read_and_delete(auth_client: FlaskClient) -> None:
    meta = upload(auth_client, headers=ALICE)
    assert auth_client.get(f"/v1/datasets/{meta['id']}", headers=BOB).status_code == 404
    assert auth_client.delete(f"/v1/datasets/{meta['id']}", headers=BOB).status_code == 404
    assert auth_client.get("/v1/datasets", headers=BOB).get_json()["items"] == []
    assert auth_client.get(f"/v1/datasets/{meta['id']}", headers=ALICE).status_code == 200
