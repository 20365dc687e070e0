"""Datasets: upload a CSV (multipart field `file` or a raw text/csv body), list, read, delete."""

from __future__ import annotations

from typing import IO

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, Tag

from api.problems import InvalidRequest, LengthRequired, UnsupportedMediaType
from api.schemas import Dataset, DatasetList, DatasetPath, ListQuery, Problem, UploadQuery
from api.services import services, tenant
from store.ids import is_dataset_id
from store.jobs import InvalidCursor

bp = APIBlueprint(
    "datasets",
    __name__,
    url_prefix="/v1/datasets",
    abp_tags=[Tag(name="datasets")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)

_CSV_SCHEMA = {"type": "string", "format": "binary"}
UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": _CSV_SCHEMA}}
            },
            "text/csv": {"schema": _CSV_SCHEMA},
        },
    }
}
CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/octet-stream")


def _upload_stream() -> tuple[IO[bytes], str | None]:
    """The uploaded bytes as a stream, and a file name if the client sent one."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise InvalidRequest(
                "multipart upload without a 'file' field; send the CSV as the field 'file'",
                errors=[{"loc": ["body", "file"], "msg": "field required"}],
            )
        return upload.stream, upload.filename or None
    if request.mimetype not in CSV_TYPES:
        raise UnsupportedMediaType(
            f"expected a CSV as text/csv or multipart/form-data, got {request.mimetype or 'none'!r}"
        )
    if request.content_length is None and not request.environ.get("wsgi.input_terminated"):
        # Without a length and a server that ends the stream, werkzeug hands out an empty stream.
        raise LengthRequired("send a Content-Length header (or use a server that supports chunked uploads)")
    return request.stream, None


@bp.post("", responses={201: Dataset, 411: Problem, 413: Problem, 415: Problem}, openapi_extensions=UPLOAD_DOC)
def upload_dataset(query: UploadQuery) -> tuple[Response, int]:
    """Upload a CSV; it is parsed once (rows, column dtypes, missing values) and stored with its sha256."""
    stream, filename = _upload_stream()
    settings = services().settings
    meta = services().datasets.save(
        tenant(),
        stream,
        query.name or filename,
        settings.max_upload_mb * 1024 * 1024,
        max_rows=settings.max_rows,
        max_columns=settings.max_columns,
    )
    response = jsonify(meta)
    response.headers["Location"] = f"/v1/datasets/{meta['id']}"
    return response, 201


@bp.get("", responses={200: DatasetList})
def list_datasets(query: ListQuery) -> Response:
    """The tenant's datasets, newest first."""
    items = services().datasets.list(tenant())
    if query.cursor:
        if not is_dataset_id(query.cursor):
            raise InvalidCursor(f"invalid cursor {query.cursor!r}: pass the next_cursor of a previous page")
        items = [d for d in items if d["id"] < query.cursor]
    page = items[: query.limit]
    next_cursor = page[-1]["id"] if len(items) > query.limit else None
    return jsonify({"items": page, "next_cursor": next_cursor})


@bp.get("/<dataset_id>", responses={200: Dataset})
def get_dataset(path: DatasetPath) -> Response:
    return jsonify(services().datasets.get(tenant(), path.dataset_id))


@bp.delete("/<dataset_id>", responses={204: None})
def delete_dataset(path: DatasetPath) -> tuple[str, int]:
    services().datasets.delete(tenant(), path.dataset_id)
    return "", 204
