"""RFC 9457 problem details for every error the API returns: no 500 with a stack trace for bad input."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from kombu.exceptions import OperationalError as BrokerError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from training.errors import ArtifactTampered, InternalError, MLQError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(MLQError):
    """The errors only the HTTP layer raises (the rest come from the training library and the job store)."""


class MalformedJson(ApiError):
    """The body is not valid JSON (UTF-8), or holds NaN, Infinity or a number too large for a float."""

    code, status = "malformed_json", 400


class Unauthorized(ApiError):
    """No bearer token, or one no tenant has (MLQ_AUTH_TOKENS)."""

    code, status = "unauthorized", 401


class InvalidEventId(ApiError):
    """A Last-Event-ID (header or `last_event_id`) that is not an event id this server could have sent."""

    code, status = "invalid_event_id", 400


class HostNotAllowed(ApiError):
    """The request's Host is not in MLQ_ALLOWED_HOSTS (api/hosts.py): refused against DNS rebinding."""

    code, status = "host_not_allowed", 400


class CrossOrigin(ApiError):
    """A browser sent a write from another site (Sec-Fetch-Site / Origin): refused against CSRF (api/csrf.py)."""

    code, status = "cross_origin", 403


class RequestTimeout(ApiError):
    """The client stopped sending its body for MLQ_CLIENT_TIMEOUT_S."""

    code, status = "request_timeout", 408


class OutputNotReady(ApiError):
    """A batch job's output was asked for before the job succeeded."""

    code, status = "output_not_ready", 409


class NoDriftReference(ApiError):
    """A version without drift reference statistics (registered before they existed, or not by training)."""

    code, status = "no_drift_reference", 409


class IdempotencyKeyInUse(ApiError):
    """A request with the same Idempotency-Key is still being handled."""

    code, status = "idempotency_key_in_use", 409


class IdempotencyKeyExpired(ApiError):
    """The job an Idempotency-Key created has expired (MLQ_JOB_TTL_S)."""

    code, status = "idempotency_key_expired", 409


class OutputGone(ApiError):
    """A batch job's output file no longer exists."""

    code, status = "output_gone", 404


class LengthRequired(ApiError):
    """An upload without Content-Length on a server that cannot read chunked bodies."""

    code, status = "length_required", 411


class PayloadTooLarge(ApiError):
    """A JSON body over MLQ_MAX_JSON_MB or an upload over MLQ_MAX_UPLOAD_MB."""

    code, status = "payload_too_large", 413


class UnsupportedMediaType(ApiError):
    """A body in a content type the route does not take."""

    code, status = "unsupported_media_type", 415


class InvalidRequest(ApiError):
    """The request does not match the route's schema; `errors` names each field."""

    code, status = "invalid_request", 422


class IdempotencyKeyReused(ApiError):
    """An Idempotency-Key sent again with a different body."""

    code, status = "idempotency_key_reused", 422


class LimitExceeded(ApiError):
    """A parameter over a server limit (epochs, trials, rows; MLQ_MAX_*)."""

    code, status = "limit_exceeded", 422


class RateLimited(ApiError):
    """More submissions in a minute than MLQ_RATE_LIMIT_PER_MINUTE."""

    code, status = "rate_limited", 429


class TooManyJobs(ApiError):
    """The tenant already holds MLQ_MAX_ACTIVE_JOBS queued or running jobs."""

    code, status = "too_many_jobs", 429


class TooManyWaits(ApiError):
    """More waits and event streams open than MLQ_MAX_WAITS_PER_TENANT or MLQ_MAX_WAITS."""

    code, status = "too_many_waits", 429


class Unavailable(ApiError):
    """Redis (the job store and queue) is not answering."""

    code, status = "unavailable", 503

    def __init__(self, message: str = "the queue (Redis) is not answering; retry shortly") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response. 422s share the contract's type `/problems/validation`."""
    phrase = HTTPStatus(status).phrase
    if status == 422:
        type_, title = "/problems/validation", "Invalid request"
    else:
        type_, title = "/problems/" + phrase.lower().replace(" ", "-"), phrase
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail, "instance": request.path}
    if code:
        body["code"] = code
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.content_type = PROBLEM_JSON
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _prefix(title: str) -> list[str]:
    # flask-openapi3 validates each part with its own model; say where a field came from unless it is the body.
    for suffix, where in (("Query", "query"), ("Header", "header"), ("Headers", "header"), ("Path", "path")):
        if title.endswith(suffix):
            return [where]
    return []


def validation_error_response(exc: ValidationError) -> Response:
    """flask-openapi3's `validation_error_callback`: pydantic errors as a 422 problem with loc/msg pairs."""
    prefix = _prefix(exc.title)
    errors = [{"loc": [*prefix, *e["loc"]], "msg": e["msg"]} for e in exc.errors(include_url=False)]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5])
    return problem(422, f"invalid request: {detail}", code=InvalidRequest.code, errors=errors)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if exc.response is not None:  # flask-openapi3 aborts with a ready response (validation errors)
            return exc.response  # type: ignore[return-value]
        status = exc.code or 500
        detail = {
            404: f"no route {request.path}; see /openapi.json for the routes",
            405: f"{request.method} is not allowed on {request.path}",
            413: "the request body is larger than the limit (MLQ_MAX_UPLOAD_MB)",
        }.get(status, exc.description)
        headers = dict(exc.get_headers()) if status == 405 else {}
        headers.pop("Content-Type", None)
        return problem(status, detail or HTTPStatus(status).phrase, headers=headers)

    @app.errorhandler(MLQError)
    def mlq_error(exc: MLQError) -> Response:
        if exc.status >= 500 or isinstance(exc, ArtifactTampered):  # a tampered artifact is for operators too
            log.error("%s: %s", exc.code, exc.message)
        return problem(exc.status, exc.message, code=exc.code, errors=exc.errors, headers=exc.headers)

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        log.error("redis error: %s", exc)
        return mlq_error(Unavailable("the job store (Redis) is not answering; retry shortly"))

    @app.errorhandler(BrokerError)
    def broker_down(exc: BrokerError) -> Response:
        log.error("broker error: %s", exc)
        return mlq_error(Unavailable())

    @app.errorhandler(TimeoutError)
    def client_too_slow(exc: TimeoutError) -> Response:
        # The client sent nothing for MLQ_CLIENT_TIMEOUT_S while its body was read (api/__init__.py).
        response = mlq_error(
            RequestTimeout("the request body did not arrive in time (MLQ_CLIENT_TIMEOUT_S); send it again")
        )
        response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal error; it was logged", code=InternalError.code)
