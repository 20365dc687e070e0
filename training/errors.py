"""The one error root of the training library. Stdlib only: the API maps these to problem details.

Every class has a stable `code` (machine-readable, part of job error objects) and an HTTP `status` hint.
Messages say what happened, what was expected, and how to fix it.
"""

from __future__ import annotations

import json
from typing import Any


class MLQError(Exception):
    """The root of every error mlqueue's server side raises: the training library, the workers, the job store and
    the API (api/problems.py adds the HTTP-only ones). Stdlib only, so every layer can import it.

    `code` is stable and machine-readable (a job's `error.type`, a problem's `code`); `status` is the HTTP status
    the API answers with; `headers` are sent with it (Retry-After, WWW-Authenticate).
    """

    code = "error"
    status = 422

    def __init__(
        self, message: str, *, errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        # Field-level details in the contract's shape: [{"loc": ["params", "epochs"], "msg": "must be >= 1"}].
        self.errors = errors or []
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        """The job error object of the contract: {"type": code, "message", "errors"?}."""
        out: dict[str, Any] = {"type": self.code, "message": self.message}
        if self.errors:
            out["errors"] = self.errors
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


class DataError(MLQError):
    """Raised when a CSV or its columns cannot be used (empty, unparseable, one class, wrong types)."""

    code = "invalid_data"


class ColumnNotFound(DataError):
    """Raised when a target or feature column is not in the data."""

    code = "column_not_found"


class UnknownAlgorithm(MLQError):
    """Raised when an algorithm name is not in the catalogue (GET /v1/algorithms)."""

    code = "unknown_algorithm"


class InvalidParams(MLQError):
    """Raised when algorithm parameters have unknown keys, wrong types or out-of-range values."""

    code = "invalid_params"


class InvalidName(MLQError):
    """Raised when a model, alias or tenant name is unsafe or malformed."""

    code = "invalid_name"


class ResourceNotFound(MLQError):
    """Raised when a model, version or alias does not exist."""

    code = "not_found"
    status = 404


class ExportNotServable(MLQError):
    """Raised when a prediction names a version that is an export (a file to download, which no worker loads)."""

    code = "export_not_servable"
    status = 422


class VersionInUse(MLQError):
    """Raised when deleting a version that an alias still points at."""

    code = "version_in_use"
    status = 409


class ArtifactTampered(MLQError):
    """Raised when an artifact's sha256 (or HMAC) does not match its manifest; nothing was deserialized."""

    code = "artifact_integrity"
    # The request is fine and the server is not broken: the stored version conflicts with its own manifest, and
    # no retry will change that (a 500 said "our bug, try later").
    status = 409
    REMEDY = "re-register the model (train it again) or restore this version's files from a backup"

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        if "re-register" not in message.lower():
            message = f"{message}; {self.REMEDY}"
        super().__init__(message, errors=errors)


class InvalidInput(MLQError):
    """Raised when a prediction row has a missing or mistyped feature."""

    code = "invalid_input"

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        loc: list[Any] = ["inputs"]
        if row is not None:
            loc.append(row)
        if column is not None:
            loc.append(column)
        super().__init__(message, errors=[{"loc": loc, "msg": message}])
        self.row = row
        self.column = column


class Cancelled(MLQError):
    """Raised when training stops because `should_stop()` said so."""

    code = "cancelled"
    status = 409


# ---- how a job ends when it fails for a reason of its own (stored as the job's `error`, never an HTTP answer) ----
class WorkerLost(MLQError):
    """A job's workers died MLQ_MAX_ATTEMPTS times while running it (a poison job: too big, or crashing the process)."""

    code = "worker_lost"
    status = 500


class TimeLimit(MLQError):
    """A job ran past MLQ_JOB_TIME_LIMIT_S and was stopped."""

    code = "time_limit"
    status = 500


class DeadlineExceeded(MLQError):
    """Raised when an online prediction's deadline (X-Request-Timeout-Ms, OIP `timeout`) passed before its answer;
    a worker never computes such a request, its job ends `expired`."""

    code = "deadline_exceeded"
    status = 504


class QueueFull(MLQError):
    """Raised when a model already has its serving policy's `max_queued` predictions waiting: retry later."""

    code = "queue_full"
    status = 429


class TooManyAttempts(MLQError):
    """An online prediction was taken by MLQ_MAX_ATTEMPTS inference workers that all died before answering."""

    code = "too_many_attempts"
    status = 500


class InternalError(MLQError):
    """Something failed that is not the user's doing; the message names the exception, the log has the trace."""

    code = "internal_error"
    status = 500


class EnqueueFailed(MLQError):
    """The job record was written but the queue (Redis) did not take its message; submit it again."""

    code = "enqueue_failed"
    status = 503


class NoTrialSucceeded(MLQError):
    """Every trial of a search failed; the message quotes the first trial's error."""

    code = "no_trial_succeeded"


class SearchFailed(MLQError):
    """A search's trials ran, but registering the best one failed."""

    code = "search_failed"
    status = 500


class AllRowsFailed(MLQError):
    """A batch prediction could not score any of its rows."""

    code = "all_rows_failed"


class InvalidModel(MLQError):
    """Raised when an uploaded model (ONNX file, tokenizer, metadata) fails a check before it is stored; `errors`
    names the field (model, tokenizer, metadata.<key>, external_data)."""

    code = "invalid_model"

    def __init__(self, message: str, field: list[str | int] | None = None) -> None:
        loc: list[str | int] = field or ["model"]
        super().__init__(message, errors=[{"loc": loc, "msg": message}])


# ---- signals between parts of the server; they never reach a user ----
class RegistrationDeclined(MLQError):
    """Raised when another attempt of the same job already owns the registration: this attempt registers nothing."""

    code = "registration_declined"
    status = 409


class NotCompilable(MLQError):
    """Raised when a fitted preprocessor has a step the compiled path does not reproduce; the pandas path serves it."""

    code = "not_compilable"
    status = 500


class SettingsError(MLQError, ValueError):
    """Raised when an `MLQ_*` variable cannot be parsed; the message names the variable and the expected form."""

    code = "invalid_setting"
    status = 500
