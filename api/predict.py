"""Inference: POST /v1/models/{name}/predict. Rows are checked against the version's features here, so a bad
row is a 422 naming the row and the column and never reaches the queue.

The hot path of online inference, kept to two Redis round trips: ONE MULTI writes the job record and appends
the request to the inference stream (store/inference_queue.py), then, when the client waits, ONE BLPOP on the
job's reply list returns the finished record that the batching worker pushed (no pub/sub, no polling). The
model's version and features come from a per-process cache checked against the registry's state token at most
every MODEL_RECHECK_S (an alias move is seen by new requests within that time; the workers see it at once).
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

import redis
from flask import Response, abort, current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.limits import check_rate_limit
from api.model_routes import known_name
from api.parsing import MAX_WAIT_S, json_body, wait_seconds
from api.problems import ApiError, Unavailable, validation_error_response
from api.replies import job_reply
from api.schemas import Job, JobHeaders, ModelPath, PredictBody, Problem, WaitQuery
from api.servable import refuse_export
from api.services import Services, services, tenant
from api.serving import ServeOptions, deadline_after, header_timeout_ms, priority_of, queue_cap
from api.submit import IdempotencyClaim
from api.traffic import VERSION_HEADER, choose_version, policy_for
from api.waits import DISCONNECT_CHECK_S, client_gone, client_socket
from store.datasets import TooManyRows
from store.ids import new_id
from store.inference_queue import STREAM, STREAM_HIGH, stream_entry
from store.jobs import JobStore, now_rfc3339
from store.lua_loader import outcome as script_outcome
from store.records import JobRecord
from store.redis_url import client as redis_client
from store.script_outcomes import CreateOutcome
from store.traffic import TrafficPolicy
from training.errors import DeadlineExceeded, InvalidInput, QueueFull
from training.manifest import ModelManifest
from training.postprocess import check_postprocess

bp = APIBlueprint(
    "predict",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="inference")],
    abp_security=[{"bearer": []}],
    abp_responses={
        400: Problem,
        401: Problem,
        404: Problem,
        409: Problem,
        413: Problem,
        415: Problem,
        422: Problem,
        429: Problem,
        503: Problem,
        504: Problem,
    },
)
PLAIN = ServeOptions()  # no deadline, normal priority
DEADLINE_SLACK_MS = 20  # a wait cut to the deadline ends a few ms before it (clock reads, the last BLPOP slice)
MAX_REPORTED = 20  # enough to fix a batch; a 1000-row batch of mistakes needs no 1000-entry answer
MODEL_RECHECK_S = 1.0  # the registry's state token costs ~50 us (a file read + a directory listing)
_lock = threading.Lock()


def validates_itself(view: Any) -> Any:
    """flask-openapi3 documents `view` from its annotations but does not validate the request: the view does.

    Its per-request machinery (a model per request part, JSON schemas looked up per field) was about half of the
    API's CPU per predict request. The view validates with the same pydantic models, so answers, error shapes and the
    OpenAPI document stay exactly as they were; query and headers are only validated when present.
    """
    view.__delay_validate_request__ = True
    return view


def _validated(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        abort(validation_error_response(exc))


class ModelInfo(NamedTuple):
    checked_at: float
    token: str
    version: int
    names: list[str]
    dtypes: dict[str, str]
    task: str  # with n_classes: what the post-processing options are checked against at submit
    n_classes: int
    classes: list[Any]  # the manifest's classes in order (the OIP `probabilities` columns)
    policy: TrafficPolicy | None = None  # the alias's split or shadow (api/traffic.py); None: `version` only


def feature_types(manifest: ModelManifest) -> tuple[list[str], dict[str, str]]:
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
    if dtype == "text" and not isinstance(value, str):  # an uploaded text model's column (docs/models.md)
        return f"expected text (a string), got {'nothing' if value is None else type(value).__name__}"
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
            errors.append(
                {
                    "loc": ["inputs", i],
                    "msg": f"has {len(row)} values, expected {len(names)} in the order {', '.join(names)}",
                }
            )
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
        exc = InvalidInput(
            f"{where}: {first['msg']}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
            row=first["loc"][1],
            column=first["loc"][2] if len(first["loc"]) > 2 else None,
        )
        exc.errors = errors
        raise exc


def model_info(tenant_: str, name: str, ref: str | int | None) -> ModelInfo:
    """The version `ref` means and its features, cached per process; ResourceNotFound is never cached."""
    svc = services()
    cache: dict[tuple[str, str, str | None], ModelInfo] = current_app.extensions.setdefault("mlq_predict_models", {})
    key = (tenant_, name, None if ref is None else str(ref))
    now = time.monotonic()
    info = cache.get(key)
    if info is not None and now - info.checked_at < MODEL_RECHECK_S:
        return info
    token = svc.registry.state_token(tenant_, name)
    policy = policy_for(tenant_, name, ref)  # a split changes no registry token: read with it, once a second
    if info is not None and info.token == token and info.policy == policy:
        info = info._replace(checked_at=now)
    else:
        version = policy.primary if policy else svc.registry.resolve(tenant_, name, ref)
        manifest = svc.registry.manifest(tenant_, name, version)
        refuse_export(name, version, manifest)
        info = ModelInfo(
            now,
            token,
            version,
            *feature_types(manifest),
            manifest.get("task", ""),
            len(manifest.get("classes") or []),
            list(manifest.get("classes") or []),
            policy,
        )
    cache[key] = info
    return info


def waiter() -> redis.Redis:
    """A client for BLPOP: the app's client times out after 2 s, a wait may last MAX_WAIT_S."""
    client: redis.Redis | None = current_app.extensions.get("mlq_predict_waiter")
    if client is None:
        with _lock:
            client = current_app.extensions.get("mlq_predict_waiter")
            if client is None:
                client = redis_client(
                    services().settings.redis_url,
                    socket_connect_timeout=2.0,
                    socket_timeout=MAX_WAIT_S + 5,
                    decode_responses=True,
                    retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                )
                current_app.extensions["mlq_predict_waiter"] = client
    return client


def unavailable() -> ApiError:
    return Unavailable()


@bp.post("/<name>/predict", responses={200: Job, 202: Job})
@json_body
@validates_itself
def predict(
    name: str = "",
    # flask-openapi3 reads the annotations for the OpenAPI document; the view validates the request itself.
    path: ModelPath = None,  # type: ignore[assignment]
    query: WaitQuery = None,  # type: ignore[assignment]
    header: JobHeaders = None,  # type: ignore[assignment]
    body: PredictBody = None,  # type: ignore[assignment]
) -> Response:
    """Queue a prediction on the `inference` workers: 202 with the job, or 200 when waited for."""
    query = _validated(WaitQuery, request.args.to_dict() if request.args else {})
    header = _validated(
        JobHeaders, {h: request.headers[h] for h in ("Idempotency-Key", "Prefer") if h in request.headers}
    )
    body = _validated(PredictBody, request.get_json())
    name = known_name(name)
    check_row_count(name, len(body.inputs))
    claim = IdempotencyClaim(header.idempotency_key)
    replayed = claim.replay(query.wait)
    if replayed is not None:
        return replayed
    wait, from_prefer = wait_seconds(query.wait)
    seconds: float = wait
    postprocess = body.postprocess.model_dump(exclude_none=True) if body.postprocess else {}
    timeout_ms = header_timeout_ms()
    options = ServeOptions(
        deadline_after(timeout_ms, "X-Request-Timeout-Ms") if timeout_ms is not None else None,
        priority_of(body.priority, "priority"),
    )
    if timeout_ms is not None:  # a request with a deadline waits for its answer up to it, then it is a 504
        seconds = min(seconds, timeout_ms / 1000) if seconds else timeout_ms / 1000
    outcome = run_prediction(
        tenant(),
        name,
        body.version,
        body.inputs,
        postprocess,
        seconds,
        claim=claim,
        options=options,
        routing_key=body.routing_key,
    )
    if options.deadline_ms is not None and outcome.waited:
        past_deadline(outcome.job, options.deadline_ms)
    response = job_reply(
        services().jobs.public(outcome.job),
        created=True,
        waited_s=round(seconds) if outcome.waited else 0,
        from_prefer=from_prefer,
    )
    response.headers[VERSION_HEADER] = str(outcome.version)
    return response


def past_deadline(job: JobRecord, deadline_ms: int) -> None:
    """DeadlineExceeded (504) for a job that ended `expired`, or that has no answer at its deadline (a shorter
    Prefer: wait that ran out first is the usual 202)."""
    _, now_ms = now_rfc3339()
    late = now_ms >= deadline_ms - DEADLINE_SLACK_MS and job["status"] in ("queued", "running")
    if job["status"] == "expired" or late:
        raise DeadlineExceeded(
            f"no answer before the request's deadline: job {job['id']} is {job['status']} "
            f"(GET /v1/jobs/{job['id']}); a request still queued at its deadline is never computed",
            headers={"Location": f"/v1/jobs/{job['id']}"},
        )


def check_row_count(name: str, rows: int) -> None:
    """TooManyRows when a request carries more rows than MLQ_MAX_BATCH_ROWS."""
    limit = services().settings.max_batch_rows
    if rows > limit:
        raise TooManyRows(
            f"{rows} rows is more than the limit of {limit} per request "
            "(MLQ_MAX_BATCH_ROWS); split the batch, or upload the rows as a dataset and score it "
            f"with POST /v1/models/{name}/batch-predict",
            errors=[{"loc": ["inputs"], "msg": f"at most {limit} rows"}],
        )


class Outcome(NamedTuple):
    job: JobRecord  # as it was answered, or as it is when the wait ended
    waited: bool  # whether the request held a wait slot (and so waited up to its seconds)
    version: int  # the version that serves it (a split alias's choice)


def run_prediction(
    owner: str,
    name: str,
    ref: str | int | None,
    rows: list[Any],
    postprocess: dict[str, Any],
    seconds: float,
    *,
    claim: IdempotencyClaim | None = None,
    options: ServeOptions = PLAIN,
    rows_checked: bool = False,
    routing_key: str | None = None,
) -> Outcome:
    """The one path of an online prediction, whichever protocol it came in by (/v1 predict, /v2 infer): rate
    limit, rows checked against the version's features, job record + stream entry in one round trip, then the
    wait for the answer (up to `seconds`, when a wait slot is free)."""
    svc = services()
    done = held = False
    keyed = claim is not None and claim.key is not None  # the key is recorded before the wait's first slice
    try:
        check_rate_limit()
        info = model_info(owner, name, ref)
        if not rows_checked:  # the OIP codec builds rows that pass it by construction
            check_rows(rows, info.names, info.dtypes)
        check_postprocess(postprocess, info.task, info.n_classes)  # top_k beyond the classes, proba of a regressor
        job_id = new_id("job")
        version, shadow = choose_version(info.version, info.policy, routing_key)
        # PredictRequest's fields, built directly: its encode() (dataclasses.asdict) deep-copies every row.
        message: dict[str, Any] = {
            "job_id": job_id,
            "tenant": owner,
            "model": name,
            "version": version,
            "inputs": rows,
            "postprocess": postprocess,
        }
        if shadow is not None:
            message["shadow"] = shadow
        # The serving fields only when set: the stream entry of a plain request stays as it was.
        alias = ref if isinstance(ref, str) and not ref.isdigit() else None
        cap = queue_cap(owner, name, alias)
        for field, value in (("alias", alias), ("deadline_ms", options.deadline_ms), ("counted", cap > 0)):
            if value:
                message[field] = value
        if options.priority != "normal":
            message["priority"] = options.priority
        # The record keeps the reference, not the rows: job records stay small.
        record = svc.jobs.new_record(
            owner,
            "predict",
            name,
            {"model": name, "version": version, "rows": len(rows), "postprocess": postprocess},
            job_id,
        )
        # A wait holds one of the tenant's wait slots (api/waits.py); with none free the answer is a 202 at once.
        held = seconds > 0 and svc.waits.acquire(owner, "wait")
        # Without an Idempotency-Key to record first, the first slice of the wait rides in the same round trip.
        job, reply = submit_prediction(
            svc, record, message, seconds if held and not keyed and not cap else 0, cap, options.priority
        )
        if claim is not None:
            claim.record(job_id)
        done = True
        if held:
            job = reply or await_reply(svc.jobs, job, seconds, waited=0 if keyed else DISCONNECT_CHECK_S)
    finally:
        if held:
            svc.waits.release(owner, "wait")
        if claim is not None and not done:
            claim.release()
    return Outcome(job, held, version)


def submit_prediction(
    svc: Services,
    record: dict[str, str | int],
    message: dict[str, Any],
    wait_s: float,
    queue_cap: int = 0,
    priority: str = "normal",
) -> tuple[JobRecord, JobRecord | None]:
    """ONE round trip: the script that writes the job record and appends the request to the inference stream
    (the high-priority lane's for priority "high"), then (when `wait_s` > 0) a BLPOP on the job's reply list for
    up to DISCONNECT_CHECK_S of it, pipelined behind it (a blocking command may be the last of a pipeline).
    Returns the job, and its finished state if it came. QueueFull when the model has `queue_cap` queued."""
    client = waiter() if wait_s > 0 else svc.redis  # the app's client times out after 2 s; a BLPOP may take 5
    stream = STREAM_HIGH if priority == "high" else STREAM
    try:
        with client.pipeline(transaction=False) as pipe:
            job = svc.jobs.create_and_enqueue_in(pipe, record, stream, stream_entry(message), queue_cap)
            if wait_s > 0:
                pipe.blpop([svc.jobs.reply_key(job["id"])], timeout=min(wait_s, DISCONNECT_CHECK_S))
            results = pipe.execute()
    except redis.RedisError:
        raise unavailable() from None
    created, details = script_outcome(results[0], CreateOutcome)
    if created is CreateOutcome.FULL:
        raise QueueFull(
            f"model {record['model']!r} already has {details[0] if details else queue_cap} requests queued, its "
            f"serving policy's max_queued ({queue_cap}); retry after a moment, or raise it with "
            f"PUT /v1/models/{record['model']}/serving",
            headers={"Retry-After": "1"},
        )
    reply = results[1] if wait_s > 0 else None
    return job, (svc.jobs.decode_reply(reply[1]) if reply else None)


def await_reply(jobs: JobStore, job: JobRecord, seconds: float, waited: float = 0.0) -> JobRecord:
    """The job once its answer is pushed to its reply list, or as it is after `seconds` (`waited` of them already
    spent); blocks in slices, so that a client that has gone stops waiting within DISCONNECT_CHECK_S."""
    sock = client_socket()
    deadline = time.monotonic() + seconds - waited
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or client_gone(sock):
                # No reply in time: the record may still have ended another way (e.g. cancelled).
                return jobs.get(job["id"]) or job
            reply = waiter().blpop([jobs.reply_key(job["id"])], timeout=max(0.01, min(left, DISCONNECT_CHECK_S)))
            if reply:
                return jobs.decode_reply(reply[1])
            if left <= DISCONNECT_CHECK_S:
                # No reply in time: the record may still have ended another way (e.g. cancelled).
                return jobs.get(job["id"]) or job
    except redis.RedisError:
        raise unavailable() from None
