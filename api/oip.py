"""The Open Inference Protocol (KServe V2 / Triton) over REST, beside /v1: health, metadata and infer.

A second front door, not a second path: `infer` turns tensors into rows (api/oip_codec.py) and calls the same
`run_prediction` as /v1 predict, so the tenant, rate limits, the inference stream, batching and waits are the
same. An OIP client has no job to poll, so an infer always waits for its answer, and that wait is its deadline:
its `timeout` parameter (microseconds, as Triton defines it), or X-Request-Timeout-Ms, else MAX_WAIT_S.
Errors are the protocol's `{"error": "..."}` (with mlqueue's stable `code` beside it), never problem+json.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api.model_routes import known_name
from api.oip_codec import (
    CLASS_OUTPUTS,
    MATRIX_INPUT,
    REGRESSION_OUTPUTS,
    BadTensor,
    encode_response,
    model_outputs,
    output_tensors,
    read_tensors,
    requested_outputs,
    rows_from_tensors,
    split_body,
)
from api.parsing import MAX_WAIT_S, MB, too_large
from api.predict import ModelInfo, check_row_count, model_info, run_prediction, validates_itself
from api.problems import TooManyWaits
from api.services import services, tenant
from api.serving import ServeOptions, deadline_after, header_timeout_ms, priority_of
from store.contract import INFERENCE_QUEUE
from store.liveness import WorkerLiveness
from training.errors import MLQError

bp = APIBlueprint("oip", __name__, url_prefix="/v2", abp_tags=[Tag(name="open inference protocol")])
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
SERVER = {"name": "mlqueue", "version": "1.0.0", "extensions": ["binary_tensor_data"]}
HEADER_LENGTH = "Inference-Header-Content-Length"
STATUS_BY_CODE = {"invalid_input": 400, "invalid_params": 400, "invalid_tensor": 400}


class OipModelPath(BaseModel):
    name: str = Field(description="model name")


class OipVersionPath(BaseModel):
    name: str = Field(description="model name")
    version: str = Field(description="a version number or an alias (production, staging, ...)")


class OipError(BaseModel):
    error: str
    code: str | None = None


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    live: bool
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class ModelReady(BaseModel):
    name: str
    ready: bool


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferTensor]
    outputs: list[InferOutput] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferTensor]


ERRORS: dict[Any, Any] = {s: OipError for s in (400, 401, 404, 413, 422, 429, 503, 504)}


def _error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if code:
        body["code"] = code
    return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)


@bp.errorhandler(MLQError)
def mlq_error(exc: MLQError) -> Response:
    return _error(exc.status, exc.message, exc.code, exc.headers)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    return _error(exc.code or 500, exc.description or "error")


@bp.errorhandler(redis.RedisError)
def redis_down(exc: redis.RedisError) -> Response:
    return _error(503, "the queue (Redis) is not answering; retry shortly", "unavailable", {"Retry-After": "5"})


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _inference_ready() -> bool:
    client = services().redis
    client.ping()
    return WorkerLiveness(client).counts().get(INFERENCE_QUEUE, 0) >= 1


@bp.get("/health/live", responses={200: Live})
def live() -> Response:
    """200 `{"live": true}` while the process serves (no token needed)."""
    return _json({"live": True})


@bp.get("/health/ready", responses={200: Ready, 503: Ready})
def ready() -> Response:
    """200 `{"ready": true}` when Redis answers and an inference worker is alive, else 503 (no token needed)."""
    try:
        ok = _inference_ready()
    except redis.RedisError:
        ok = False
    return _json({"live": True, "ready": ok}, 200 if ok else 503)


@bp.get("", responses={200: ServerMetadata, 401: OipError}, security=BEARER)
def server_metadata() -> Response:
    """The server's name, version and protocol extensions."""
    return _json(SERVER)


def _metadata(name: str, ref: str | None) -> dict[str, Any]:
    owner = tenant()
    info = model_info(owner, known_name(name), ref)
    registry = services().registry
    manifest = registry.manifest(owner, name, info.version)
    versions = [str(m["version"]) for m in registry.get_model(owner, name)["versions"]]
    inputs = [
        {"name": n, "datatype": "FP64" if info.dtypes.get(n) == "number" else "BYTES", "shape": [-1, 1]}
        for n in info.names
    ]
    return {
        "name": name,
        "versions": versions,
        "platform": f"mlqueue_{manifest.get('algorithm', 'model')}",
        "inputs": inputs,
        "outputs": model_outputs(info.task, info.classes),
        # Beyond the protocol: the version served and the one-matrix alternative to per-feature tensors.
        "parameters": {
            "version": str(info.version),
            "matrix_input": (
                {"name": MATRIX_INPUT, "datatype": "FP32", "shape": [-1, len(info.names)]}
                if all(info.dtypes.get(n) == "number" for n in info.names)
                else None
            ),
        },
    }


@bp.get("/models/<name>", responses={200: ModelMetadata, **ERRORS}, security=BEARER)
@validates_itself
def model_metadata(name: str = "", path: OipModelPath = None) -> Response:  # type: ignore[assignment]
    """Inputs (one per feature: FP64, or BYTES for a categorical feature) and outputs of the served version."""
    return _json(_metadata(name, None))


@bp.get("/models/<name>/versions/<version>", responses={200: ModelMetadata, **ERRORS}, security=BEARER)
@validates_itself
def version_metadata(name: str = "", version: str = "", path: OipVersionPath = None) -> Response:  # type: ignore[assignment]
    """The same for a version number or an alias."""
    return _json(_metadata(name, version))


def _model_ready(name: str, ref: str | None) -> Response:
    model_info(tenant(), known_name(name), ref)  # 404 when the model or version does not exist
    ok = _inference_ready()
    return _json({"name": name, "ready": ok}, 200 if ok else 503)


@bp.get("/models/<name>/ready", responses={200: ModelReady, **ERRORS}, security=BEARER)
@validates_itself
def model_ready(name: str = "", path: OipModelPath = None) -> Response:  # type: ignore[assignment]
    """200 `{"ready": true}` when the model exists and an inference worker is alive, else 503."""
    return _model_ready(name, None)


@bp.get("/models/<name>/versions/<version>/ready", responses={200: ModelReady, **ERRORS}, security=BEARER)
@validates_itself
def version_ready(name: str = "", version: str = "", path: OipVersionPath = None) -> Response:  # type: ignore[assignment]
    return _model_ready(name, version)


def _body() -> bytes:
    limit = services().settings.max_json_mb * MB
    if (request.content_length or 0) > limit:
        raise too_large(services().settings.max_json_mb, "MLQ_MAX_JSON_MB")
    request.max_content_length = limit
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large(services().settings.max_json_mb, "MLQ_MAX_JSON_MB") from None
    if request.content_length is None and len(data) >= limit:
        raise too_large(services().settings.max_json_mb, "MLQ_MAX_JSON_MB")
    return data


def _options(req: dict[str, Any]) -> tuple[float, ServeOptions]:
    """(seconds to wait, deadline and priority) from the `timeout` parameter (microseconds, Triton's unit) or
    X-Request-Timeout-Ms, and the `priority` parameter; without a timeout the wait is MAX_WAIT_S, and it is the
    request's deadline too: an OIP client has no job to come back to, an answer after it would be lost."""
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadTensor("`parameters` must be an object")
    timeout = params.get("timeout")
    if timeout is not None and (type(timeout) is not int or timeout <= 0):
        raise BadTensor(f"parameters.timeout must be a positive integer (microseconds), got {timeout!r}")
    header_ms = header_timeout_ms()
    timeout_ms = -(-timeout // 1000) if timeout is not None else header_ms
    where = "parameters.timeout" if timeout is not None else "X-Request-Timeout-Ms"
    deadline = deadline_after(timeout_ms if timeout_ms is not None else MAX_WAIT_S * 1000, where)
    options = ServeOptions(deadline, priority_of(params.get("priority"), "parameters.priority"))
    return options.wait_s(MAX_WAIT_S), options


def _answer(req: dict[str, Any], info: ModelInfo, job: dict[str, Any]) -> Response:
    status = job["status"]
    if status == "succeeded":
        result = job["result"] or {}
        outputs = output_tensors(result.get("predictions") or [], info.task, info.classes)
        available = list(CLASS_OUTPUTS if info.task == "classification" else REGRESSION_OUTPUTS)
        response = {"model_name": result.get("model"), "model_version": str(result.get("version"))}
        if isinstance(req.get("id"), str):
            response["id"] = req["id"]
        body, header_length = encode_response(response, outputs, requested_outputs(req, available))
        if header_length is None:
            return Response(body, mimetype="application/json")
        return Response(body, mimetype="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})
    if status in ("queued", "running", "expired"):
        return _error(504, f"no answer within the request's timeout (job {job['id']} is {status})", "deadline_exceeded")
    error = job.get("error") or {}
    code = str(error.get("type") or error.get("code") or "failed")
    return _error(STATUS_BY_CODE.get(code, 500), str(error.get("message") or f"the prediction {status}"), code)


def _infer(name: str, ref: str | None) -> Response:
    name = known_name(name)
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None and request.is_json:
        parsed = request.get_json(cache=True)  # already parsed (and size-checked) by api.parsing.check_json_body
        if not isinstance(parsed, dict):
            raise BadTensor("the inference request must be a JSON object with an `inputs` list")
        req, binary = parsed, memoryview(b"")
    else:
        req, binary = split_body(_body(), header_length)
    # Validate the requested outputs before queueing anything.
    owner = tenant()
    info = model_info(owner, name, ref)
    available = list(CLASS_OUTPUTS if info.task == "classification" else REGRESSION_OUTPUTS)
    requested_outputs(req, available)
    rows = rows_from_tensors(read_tensors(req, binary), info.names, info.dtypes)
    check_row_count(name, len(rows))
    seconds, options = _options(req)
    outcome = run_prediction(owner, name, ref, rows, {}, seconds, options=options, rows_checked=True)
    if not outcome.waited:
        raise TooManyWaits("too many requests are waiting for answers; retry shortly", headers={"Retry-After": "1"})
    return _answer(req, info, dict(outcome.job))


INFER_RESPONSES: dict[Any, Any] = {
    200: {
        "content": {
            "application/json": {
                "schema": InferResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }
    },
    **ERRORS,
}


@bp.post("/models/<name>/infer", responses=INFER_RESPONSES, security=BEARER)
@validates_itself
def infer(name: str = "", path: OipModelPath = None, body: InferRequest = None) -> Response:  # type: ignore[assignment]
    """Inference: JSON tensors or Triton's binary tensor extension; answers the output tensors."""
    return _infer(name, None)


@bp.post("/models/<name>/versions/<version>/infer", responses=INFER_RESPONSES, security=BEARER)
@validates_itself
def version_infer(
    name: str = "",
    version: str = "",
    path: OipVersionPath = None,  # type: ignore[assignment]
    body: InferRequest = None,  # type: ignore[assignment]
) -> Response:
    """Inference on a version number or an alias."""
    return _infer(name, version)
