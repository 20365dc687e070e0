"""Inference: POST /v1/models/{name}/predict. Rows are checked against the version's features here, so a bad
row is a 422 naming the row and the column and never reaches the queue.

The hot path of online inference, kept to two Redis round trips: ONE MULTI writes the job record and appends
the request to the inference stream (worker/inference_queue.py), then, when the client waits, ONE BLPOP on the
job's reply list returns the finished record that the batching worker pushed (no pub/sub, no polling). The
model's version and features come from a per-process cache checked against the registry's state token at most
every MODEL_RECHECK_S (an alias move is seen by new requests within that time; the workers see it at once).
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

import orjson
import redis
from flask import Response, current_app
from flask_openapi3 import APIBlueprint, Tag

from api.limits import check_rate_limit
from api.models import known_name
from api.parsing import MAX_WAIT_S, json_body, wait_seconds
from api.problems import ApiError
from api.schemas import Job, JobHeaders, ModelPath, PredictBody, Problem, WaitQuery
from api.services import services, tenant
from api.submit import FINAL, IDEMPOTENCY_TTL_S, RETRY_AFTER, _key_name, fingerprint, replay
from training.errors import InvalidInput
from worker.ids import new_id
from worker.inference_queue import enqueue_in

bp = APIBlueprint("predict", __name__, url_prefix="/v1/models", abp_tags=[Tag(name="inference")],
                  abp_security=[{"bearer": []}],
                  abp_responses={400: Problem, 401: Problem, 404: Problem, 409: Problem, 413: Problem,
                                 415: Problem, 422: Problem, 503: Problem})
MAX_REPORTED = 20  # enough to fix a batch; a 1000-row batch of mistakes needs no 1000-entry answer
MODEL_RECHECK_S = 1.0  # the registry's state token costs ~50 us (a file read + a directory listing)
_lock = threading.Lock()


class PredictQuery(WaitQuery):
    """WaitQuery whose argument-free JSON schema is built once.

    flask-openapi3 calls `model_json_schema()` on the query and header models of EVERY request to look up field
    types; py-spy showed that schema generation as ~40 % of the API's CPU per predict request.
    """

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _cached_schema(cls, super().model_json_schema, args, kwargs)


class PredictHeaders(JobHeaders):
    """JobHeaders with the schema cached as in PredictQuery."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _cached_schema(cls, super().model_json_schema, args, kwargs)


_SCHEMAS: dict[type, dict[str, Any]] = {}


def _cached_schema(cls: type, build: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if args or kwargs:  # the OpenAPI document's calls: rare, and their result may be edited by the caller
        return dict(build(*args, **kwargs))
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = dict(build())
    return schema


class ModelInfo(NamedTuple):
    checked_at: float
    token: str
    version: int
    names: list[str]
    dtypes: dict[str, str]


def feature_types(manifest: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Feature names in order and their raw dtypes ("number" | "category"), from either manifest shape."""
    names, dtypes = [], dict(manifest.get("feature_dtypes") or {})
    for feature in manifest.get("features") or []:
        if isinstance(feature, dict):
            names.append(feature["name"])
            dtypes.setdefault(feature["name"], feature.get("dtype", ""))
        else:
            names.append(str(feature))
    return names, dtypes


def _value_problem(value: Any, dtype: str) -> str | None:
    if value is None:
        return None  # missing values are imputed by the model's preprocessing
    if isinstance(value, dict | list):
        return f"expected a single value, got {type(value).__name__}"
    if dtype == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        return f"expected a number, got {value!r}"
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return "expected a number that fits in 64 bits"
    return None


def check_rows(rows: list[Any], names: list[str], dtypes: dict[str, str]) -> None:
    """Raise InvalidInput listing (up to 20) rows with a missing, extra-length or mistyped feature."""
    errors: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            for name in names:
                problem = "missing feature" if name not in row else _value_problem(row[name], dtypes.get(name, ""))
                if problem:
                    errors.append({"loc": ["inputs", i, name], "msg": problem})
        elif len(row) != len(names):
            errors.append({"loc": ["inputs", i], "msg": f"has {len(row)} values, expected {len(names)} in the "
                                                        f"order {', '.join(names)}"})
        else:
            for name, value in zip(names, row, strict=True):
                problem = _value_problem(value, dtypes.get(name, ""))
                if problem:
                    errors.append({"loc": ["inputs", i, name], "msg": problem})
        if len(errors) >= MAX_REPORTED:
            break
    if errors:
        first = errors[0]
        where = f"row {first['loc'][1]}" + (f", column {first['loc'][2]!r}" if len(first["loc"]) > 2 else "")
        exc = InvalidInput(f"{where}: {first['msg']}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                           row=first["loc"][1], column=first["loc"][2] if len(first["loc"]) > 2 else None)
        exc.errors = errors
        raise exc


def model_info(tenant_: str, name: str, ref: str | int | None) -> ModelInfo:
    """The version `ref` means and its features, cached per process; NotFound is never cached."""
    svc = services()
    cache: dict[tuple[str, str, str | None], ModelInfo] = current_app.extensions.setdefault("mlq_predict_models", {})
    key = (tenant_, name, None if ref is None else str(ref))
    now = time.monotonic()
    info = cache.get(key)
    if info is not None and now - info.checked_at < MODEL_RECHECK_S:
        return info
    token = svc.registry.state_token(tenant_, name)
    if info is not None and info.token == token:
        info = info._replace(checked_at=now)
    else:
        version = svc.registry.resolve(tenant_, name, ref)
        info = ModelInfo(now, token, version, *feature_types(svc.registry.manifest(tenant_, name, version)))
    cache[key] = info
    return info


def waiter() -> redis.Redis:
    """A client for BLPOP: the app's client times out after 2 s, a wait may last MAX_WAIT_S."""
    client: redis.Redis | None = current_app.extensions.get("mlq_predict_waiter")
    if client is None:
        with _lock:
            client = current_app.extensions.get("mlq_predict_waiter")
            if client is None:
                client = redis.Redis.from_url(services().settings.redis_url, socket_connect_timeout=2.0,
                                              socket_timeout=MAX_WAIT_S + 5, decode_responses=True)
                current_app.extensions["mlq_predict_waiter"] = client
    return client


def unavailable() -> ApiError:
    return ApiError(503, "the queue (Redis) is not answering; retry shortly", code="unavailable",
                    headers={"Retry-After": "5"})


@bp.post("/<name>/predict", responses={200: Job, 202: Job})
@json_body
def predict(path: ModelPath, query: PredictQuery, header: PredictHeaders, body: PredictBody) -> Response:
    """Queue a prediction on the `inference` workers: 202 with the job, or 200 when waited for."""
    svc = services()
    name = known_name(path.name)
    limit = svc.settings.max_batch_rows
    if len(body.inputs) > limit:
        raise ApiError(413, f"{len(body.inputs)} rows is more than the limit of {limit} per request "
                       "(MLQ_MAX_BATCH_ROWS); split the batch, or upload the rows as a dataset and score it "
                       f"with POST /v1/models/{name}/batch-predict", code="too_many_rows",
                       errors=[{"loc": ["inputs"], "msg": f"at most {limit} rows"}])
    key = header.idempotency_key
    replayed = replay(key, query.wait)
    if replayed is not None:
        return replayed
    done = False
    try:
        check_rate_limit()
        info = model_info(tenant(), name, body.version)
        check_rows(body.inputs, info.names, info.dtypes)
        postprocess = body.postprocess.model_dump(exclude_none=True) if body.postprocess else {}
        job_id = new_id("job")
        # PredictRequest's fields, built directly: its encode() (dataclasses.asdict) deep-copies every row.
        message = {"job_id": job_id, "tenant": tenant(), "model": name, "version": info.version,
                   "inputs": body.inputs, "postprocess": postprocess}
        # The record keeps the reference, not the rows: job records stay small.
        record = {"model": name, "version": info.version, "rows": len(body.inputs), "postprocess": postprocess}
        try:
            with svc.redis.pipeline(transaction=True) as pipe:  # record + enqueue: one round trip, all or nothing
                job = svc.jobs.create(tenant(), "predict", name, record, job_id=job_id, pipe=pipe)
                enqueue_in(pipe, message)
                pipe.execute()
        except redis.RedisError:
            raise unavailable() from None
        if key:
            svc.redis.set(_key_name(key), orjson.dumps({"fingerprint": fingerprint(), "job_id": job_id}),
                          ex=IDEMPOTENCY_TTL_S)
        done = True
    finally:
        if key and not done:
            svc.redis.delete(_key_name(key))
    return respond(job, query.wait)


def respond(job: dict[str, Any], wait: int | None) -> Response:
    """200 with the job when it ended within the requested wait (BLPOP on its reply list), else 202."""
    jobs = services().jobs
    seconds, from_prefer = wait_seconds(wait)
    if seconds > 0:
        try:
            reply = waiter().blpop([jobs.reply_key(job["id"])], timeout=seconds)
            # No reply in time: the record may still have ended another way (e.g. cancelled).
            job = jobs.decode_reply(reply[1]) if reply else (jobs.get(job["id"]) or job)
        except redis.RedisError:
            raise unavailable() from None
    final = seconds > 0 and job["status"] in FINAL
    response = Response(orjson.dumps(jobs.public(job)), status=200 if final else 202, mimetype="application/json")
    if from_prefer:
        response.headers["Preference-Applied"] = f"wait={seconds}"
    if not final:
        response.headers["Location"] = f"/v1/jobs/{job['id']}"
        response.headers["Retry-After"] = RETRY_AFTER["predict"]
    return response
