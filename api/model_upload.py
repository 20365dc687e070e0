"""Bring your own model: POST /v1/models/{name}/versions registers an uploaded ONNX file as the next version.

multipart/form-data: `model` (the .onnx file), optional `tokenizer` (a Hugging Face tokenizer.json), optional
`metadata` (JSON, as a text field or a file: task, labels, output, output_kind, features, text, max_length, batch),
optional `external_data` (repeatable: files the graph keeps its weights in, under their plain names).

The API process holds no ONNX library (onnx alone imports numpy and protobuf: ~1 s and ~40 MB the API does not
otherwise pay). The shape of the metadata is checked here; the rest (the checker, opsets, domains, external data,
batch dimension, tokenizer, one test inference) runs in a child process, `python -m training.onnx_check`, which
also keeps a graph that crashes onnxruntime away from the API. Only a model that passes is registered, like any
other version: sha256 per file, the manifest's HMAC, aliases, predict and batch predict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from api.parsing import MB, too_large
from api.problems import ApiError, InvalidRequest, UnsupportedMediaType
from api.schemas import Manifest, ModelPath, Problem
from api.services import services, tenant
from training.errors import InvalidModel
from training.onnx_metadata import MODEL_FILE, TOKENIZER_FILE, check_file_name, check_metadata
from training.registry import check_name, sha256_file

CHECK_TIMEOUT_S = 180.0  # a large Transformer's full check and first session take a while on a busy host
MULTIPART_OVERHEAD = 1 * MB
# Checks at once per API process: each child holds the model in memory (a few times its size) for seconds.
_checks = threading.BoundedSemaphore(2)

bp = APIBlueprint(
    "model_upload",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="models")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 413: Problem, 415: Problem, 422: Problem, 503: Problem},
)

_FILE = {"type": "string", "format": "binary"}
UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "model": _FILE,
                        "tokenizer": _FILE,
                        "metadata": {"type": "string", "description": "JSON object (docs/models.md)"},
                        "external_data": {"type": "array", "items": _FILE},
                    },
                }
            }
        },
    }
}


class CheckUnavailable(ApiError):
    """The model check could not run on this API host (onnx/onnxruntime missing: install mlqueue[onnx])."""

    code, status = "model_check_unavailable", 503


def _metadata() -> dict[str, Any]:
    raw: str | None = request.form.get("metadata")
    if raw is None and "metadata" in request.files:
        raw = request.files["metadata"].read().decode("utf-8", errors="replace")
    if raw is None or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise InvalidModel(f"metadata: not valid JSON ({exc})", ["metadata"]) from None
    return check_metadata(parsed)


def _save(upload: FileStorage, path: Path, budget: list[int]) -> None:
    """Stream `upload` to `path`, counting against the MLQ_MAX_MODEL_MB budget shared by every file."""
    with path.open("wb") as out:
        while chunk := upload.stream.read(MB):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise too_large(services().settings.max_model_mb, "MLQ_MAX_MODEL_MB")
            out.write(chunk)


def _stage(staging: Path) -> dict[str, Any]:
    """The upload's files in `staging`, and the metadata; 4xx naming the field for what is missing or bad."""
    model = request.files.get("model")
    if model is None:
        raise InvalidRequest(
            "multipart upload without a 'model' field; send the .onnx file as the field 'model'",
            errors=[{"loc": ["body", "model"], "msg": "field required"}],
        )
    meta = _metadata()
    budget = [services().settings.max_model_mb * MB]
    _save(model, staging / MODEL_FILE, budget)
    tokenizer = request.files.get("tokenizer")
    if tokenizer is not None:
        _save(tokenizer, staging / TOKENIZER_FILE, budget)
        try:  # the cheap part of the tokenizer's check; the child loads it with the tokenizers library
            json.loads((staging / TOKENIZER_FILE).read_bytes())
        except ValueError as exc:
            raise InvalidModel(f"tokenizer: not a tokenizer.json (not valid JSON: {exc})", ["tokenizer"]) from None
    for extra in request.files.getlist("external_data"):
        _save(extra, staging / check_file_name(extra.filename, "external_data"), budget)
    return {"metadata": meta, "filename": model.filename or MODEL_FILE}


def _run_check(staging: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The child's report on the staged model: the manifest fields, or InvalidModel naming the field."""
    # The child needs no secret of the API's (the HMAC key, tokens, store credentials): it gets none of them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLQ_", "AWS_"))}
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if not _checks.acquire(timeout=CHECK_TIMEOUT_S):
        raise CheckUnavailable("too many model uploads are being checked at once; retry shortly")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "training.onnx_check", str(staging), json.dumps(meta)],
            capture_output=True,
            timeout=CHECK_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidModel(f"the model's checks did not finish within {CHECK_TIMEOUT_S:.0f} s") from None
    finally:
        _checks.release()
    stderr = done.stderr.decode(errors="replace")
    if "ModuleNotFoundError" in stderr:
        raise CheckUnavailable(
            "this API host cannot check ONNX models: install the extra with pip install 'mlqueue[onnx]'"
        )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        report = {}
    if report.get("ok") is True:
        manifest: dict[str, Any] = report["manifest"]
        return manifest
    if "error" in report:
        error = report["error"]
        loc = (error.get("errors") or [{}])[0].get("loc") or ["model"]
        raise InvalidModel(str(error.get("message")), loc)
    # Killed by a signal or crashed inside onnxruntime: the model is what made it crash.
    raise InvalidModel(f"the model's check crashed (exit status {done.returncode}): {stderr.strip()[-400:]}")


@bp.post("/<name>/versions", responses={201: Manifest}, openapi_extensions=UPLOAD_DOC)
def upload_version(path: ModelPath) -> tuple[Response, int]:
    """Register an uploaded ONNX model as the next version, after checking it (docs/models.md)."""
    settings = services().settings
    name = check_name(path.name, "model name")
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            f"expected multipart/form-data with a 'model' file, got {request.mimetype or 'none'!r}"
        )
    limit = settings.max_model_mb * MB + MULTIPART_OVERHEAD
    if (request.content_length or 0) > limit:
        raise too_large(settings.max_model_mb, "MLQ_MAX_MODEL_MB")
    request.max_content_length = limit  # this route's own bound (a chunked body is cut off at it)
    root = settings.home / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="model-", dir=root))
    try:
        try:
            staged = _stage(staging)
        except RequestEntityTooLarge:
            raise too_large(settings.max_model_mb, "MLQ_MAX_MODEL_MB") from None
        checked = _run_check(staging, staged["metadata"])
        sha = sha256_file(staging / MODEL_FILE)
        manifest = {
            **checked,
            "name": name,
            "algorithm": "onnx",
            "model_kind": "onnx",
            "params": {},
            "metrics": {},
            "job_id": None,
            "source": {
                "kind": "upload",
                "file": staged["filename"][:200],
                "sha256": sha,
                "producer": checked["onnx"]["producer"],
                "metadata": staged["metadata"],
            },
        }
        registered = services().registry.register(tenant(), name, staging, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    response = jsonify(registered)
    response.headers["Location"] = f"/v1/models/{name}/versions/{registered['version']}"
    return response, 201
