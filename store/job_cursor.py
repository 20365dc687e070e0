"""The opaque cursors of the job list (`GET /v1/jobs?cursor=`), and the error for one this server did not write.

A cursor is the (created ms, job id) of the last job of a page, base64url without padding: the list resumes
strictly below it, so jobs created while a client pages through never shift a page. Kept apart from JobStore
because the format is a contract of its own, and `InvalidCursor` is also raised by the dataset list (api/datasets.py).
Stdlib only: the API imports it through store.jobs.
"""

from __future__ import annotations

import base64
import binascii

from store.ids import is_job_id
from training.errors import MLQError


class InvalidCursor(MLQError, ValueError):
    """Raised when a list cursor was not produced by this server."""

    code = "invalid_cursor"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message, errors=[{"loc": ["query", "cursor"], "msg": message}])


def encode_cursor(score: int, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, _, job_id = raw.partition(":")
        if not is_job_id(job_id):
            raise ValueError(job_id)
        return int(score), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page") from None
