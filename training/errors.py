"""The one error root of the training library. Stdlib only: the API maps these to problem details.

Every class has a stable `code` (machine-readable, part of job error objects) and an HTTP `status` hint.
Messages say what happened, what was expected, and how to fix it.
"""

from __future__ import annotations

from typing import Any


class MLQError(Exception):
    """Raised when the training library cannot do what it was asked; the root of all its errors."""

    code = "error"
    status = 422

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Field-level details in the contract's shape: [{"loc": ["params", "epochs"], "msg": "must be >= 1"}].
        self.errors = errors or []

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.code, "message": self.message}
        if self.errors:
            out["errors"] = self.errors
        return out


class DataError(MLQError):
    """Raised when a CSV or its columns cannot be used (empty, unparseable, one class, wrong types)."""

    code = "invalid_data"


class ColumnNotFound(DataError):
    """Raised when a target or feature column is not in the data."""

    code = "column_not_found"


class UnknownAlgorithm(MLQError):
    """Raised when an algorithm name is not in the registry."""

    code = "unknown_algorithm"


class InvalidParams(MLQError):
    """Raised when algorithm parameters have unknown keys, wrong types or out-of-range values."""

    code = "invalid_params"


class InvalidName(MLQError):
    """Raised when a model, alias or tenant name is unsafe or malformed."""

    code = "invalid_name"


class NotFound(MLQError):
    """Raised when a model, version or alias does not exist."""

    code = "not_found"
    status = 404


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
