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

from training.errors import ArtifactTampered, MLQError
from worker.jobs import InvalidCursor, JobConflict

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """Raised by a handler for a client error that the training library has no class for (413, 409, 411…)."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.errors = errors or []
        self.headers = headers or {}


def problem(status: int, detail: str, *, code: str | None = None, errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    """A problem+json response. 422s share the contract's type `/problems/validation`."""
    phrase = HTTPStatus(status).phrase
    if status == 422:
        type_, title = "/problems/validation", "Invalid request"
    else:
        type_, title = "/problems/" + phrase.lower().replace(" ", "-"), phrase
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail,
                            "instance": request.path}
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
    return problem(422, f"invalid request: {detail}", code="invalid_request", errors=errors)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if exc.response is not None:  # flask-openapi3 aborts with a ready response (validation errors)
            return exc.response  # type: ignore[return-value]
        status = exc.code or 500
        detail = {404: f"no route {request.path}; see /openapi.json for the routes",
                  405: f"{request.method} is not allowed on {request.path}",
                  413: "the request body is larger than the limit (MLQ_MAX_UPLOAD_MB)"}.get(status, exc.description)
        headers = dict(exc.get_headers()) if status == 405 else {}
        headers.pop("Content-Type", None)
        return problem(status, detail or HTTPStatus(status).phrase, headers=headers)

    @app.errorhandler(MLQError)
    def library_error(exc: MLQError) -> Response:
        if exc.status >= 500 or isinstance(exc, ArtifactTampered):  # a tampered artifact is for operators too
            log.error("%s: %s", exc.code, exc.message)
        return problem(exc.status, exc.message, code=exc.code, errors=exc.errors)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return problem(exc.status, exc.message, code=exc.code, errors=exc.errors, headers=exc.headers)

    @app.errorhandler(JobConflict)
    def job_conflict(exc: JobConflict) -> Response:
        return problem(409, exc.message, code=exc.code)

    @app.errorhandler(InvalidCursor)
    def invalid_cursor(exc: InvalidCursor) -> Response:
        return problem(400, str(exc), code="invalid_cursor", errors=[{"loc": ["query", "cursor"], "msg": str(exc)}])

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        log.error("redis error: %s", exc)
        return problem(503, "the job store (Redis) is not answering; retry shortly", code="unavailable",
                       headers={"Retry-After": "5"})

    @app.errorhandler(BrokerError)
    def broker_down(exc: BrokerError) -> Response:
        log.error("broker error: %s", exc)
        return problem(503, "the queue (Redis) is not answering; retry shortly", code="unavailable",
                       headers={"Retry-After": "5"})

    @app.errorhandler(TimeoutError)
    def client_too_slow(exc: TimeoutError) -> Response:
        # The client sent nothing for MLQ_CLIENT_TIMEOUT_S while its body was read (api/__init__.py).
        response = problem(408, "the request body did not arrive in time (MLQ_CLIENT_TIMEOUT_S); send it again",
                           code="request_timeout")
        response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal error; it was logged", code="internal")
