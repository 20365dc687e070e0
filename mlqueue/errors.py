"""Errors the mlqueue client raises: one root, one class per HTTP problem status, two for job outcomes.

Stdlib only. An HTTP error carries the server's RFC 9457 problem details unchanged in `.problem`, so a caller can
read `.errors` (the field-level list) as well as the one-line message.
"""

from __future__ import annotations

from typing import Any


class MLQueueError(Exception):
    """Raised when the mlqueue service answers with an error or cannot be used; the root of all client errors."""

    def __init__(self, status: int | None, problem: dict[str, Any]) -> None:
        self.status = status  # the HTTP status; None when the error is not an HTTP answer (a job outcome)
        self.problem = problem
        super().__init__(self.message)

    @property
    def title(self) -> str:
        return str(self.problem.get("title") or "")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or "")

    @property
    def errors(self) -> list[dict[str, Any]]:
        errors = self.problem.get("errors")
        return errors if isinstance(errors, list) else []

    @property
    def message(self) -> str:
        """One line a person can act on: the status, the detail, and the field errors if the detail omits them."""
        head = f"{self.status} {self.title}".strip() if self.status else self.title
        text = self.detail or head or "unknown error"
        fields = []
        for err in self.errors:
            if not isinstance(err, dict):
                continue
            loc = ".".join(str(p) for p in err.get("loc", []))
            msg = str(err.get("msg", ""))
            if msg and msg not in text:
                fields.append(f"{loc}: {msg}" if loc else msg)
        if fields:
            text += " (" + "; ".join(fields) + ")"
        return f"{head}: {text}" if self.status and text != head else text


class BadRequest(MLQueueError):
    """Raised on 400 (malformed request) or 415 (wrong content type)."""


class Unauthorized(MLQueueError):
    """Raised on 401: the token is missing or not one the service knows; pass `token=` or set MLQ_TOKEN."""


class NotFound(MLQueueError):
    """Raised on 404: no such job, dataset, model or version (or it belongs to another tenant)."""


class Conflict(MLQueueError):
    """Raised on 409: the resource is in a state that forbids the request (cancelling a finished job, …)."""


class PayloadTooLarge(MLQueueError):
    """Raised on 413: the upload or batch is over the service's limit."""


class ValidationFailed(MLQueueError):
    """Raised on 422: the request is well-formed but invalid; `.errors` names each field."""


class RateLimited(MLQueueError):
    """Raised on 429 after the client's retries ran out."""


class ServiceUnavailable(MLQueueError):
    """Raised on 503 (not ready: no Redis or no worker) and on other 5xx answers after retries."""


class Unreachable(MLQueueError):
    """Raised when no HTTP answer came back at all (connection refused, timeout, DNS)."""


class JobFailed(MLQueueError):
    """Raised by `Client.result()` when the job ended `failed`; `.job` is the final job object."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        error = job.get("error") or {}
        problem = {
            "type": error.get("type", "job_failed"),
            "title": f"job {job.get('id')} failed",
            "detail": f"job {job.get('id')} failed: {error.get('type', 'error')}: {error.get('message', '')}",
            "errors": error.get("errors", []),
        }
        super().__init__(None, problem)


class JobCancelled(MLQueueError):
    """Raised by `Client.result()` when the job ended `cancelled`; `.job` is the final job object."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        super().__init__(None, {"type": "cancelled", "title": f"job {job.get('id')} was cancelled"})


class WaitTimeout(MLQueueError):
    """Raised by `Client.wait()` when the job is still not final after `timeout` seconds; `.job` is its last state."""

    def __init__(self, job: dict[str, Any], timeout: float) -> None:
        self.job = job
        title = f"job {job.get('id')} is still {job.get('status')} after {timeout:g} s"
        super().__init__(None, {"type": "timeout", "title": title})


STATUS_ERRORS: dict[int, type[MLQueueError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: BadRequest,
    422: ValidationFailed,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_for(status: int, problem: dict[str, Any]) -> MLQueueError:
    """The typed error for an HTTP error status (other 4xx → MLQueueError, other 5xx → ServiceUnavailable)."""
    cls = STATUS_ERRORS.get(status) or (ServiceUnavailable if status >= 500 else MLQueueError)
    return cls(status, problem)
