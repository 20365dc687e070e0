"""Request checks that run before flask-openapi3's validation: content type (415), size (413), well-formed JSON (400).

flask-openapi3 reads bodies with `get_json(silent=True)`, which turns a malformed body or a wrong content type
into `None` and then into a confusing 422. Views that take a JSON body are marked with `@json_body`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from flask import current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from api.problems import ApiError, MalformedJson, PayloadTooLarge, UnsupportedMediaType

F = TypeVar("F", bound=Callable[..., Any])
MAX_WAIT_S = 30
MB = 1024 * 1024
_PREFER_WAIT = re.compile(r"(?:^|[,;])\s*wait\s*=\s*\"?(\d{1,9})\"?\s*(?=$|[,;])", re.IGNORECASE)


def json_body(view: F) -> F:
    """Mark a view as taking a JSON object body (functools.wraps copies the mark onto the wrapper)."""
    view.json_body = True  # type: ignore[attr-defined]
    return view


def too_large(limit_mb: int, setting: str) -> ApiError:
    return PayloadTooLarge(
        f"the request body is larger than the limit of {limit_mb} MB ({setting}); send less "
        "per request (for many rows, upload a dataset and use batch-predict)"
    )


def check_json_body() -> None:
    """A before_request hook: 415 for a non-JSON content type, 413 for a body over MLQ_MAX_JSON_MB, 400 for a body
    that is not valid JSON.

    The size is checked from Content-Length before a byte is read, and a chunked body is cut off at the limit while
    it is read: a 40 MB body never reaches the parser. Every JSON body is parsed here, once, with orjson (the app's
    JSON provider, so flask-openapi3 reuses the parsed body): it refuses NaN, ±Infinity, numbers that overflow to
    ±inf (1e400) and nesting deeper than 1024, where the stdlib parser would give inf or a RecursionError (a 500).
    """
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "json_body", False) and not request.is_json:
        raise UnsupportedMediaType(f"expected Content-Type: application/json, got {request.mimetype or 'none'!r}")
    if not request.is_json:
        return
    limit_mb = current_app.extensions["mlq"].settings.max_json_mb
    if (request.content_length or 0) > limit_mb * MB:
        raise too_large(limit_mb, "MLQ_MAX_JSON_MB")
    request.max_content_length = limit_mb * MB
    try:
        # A body without Content-Length (chunked) is cut off at the limit by Werkzeug: reaching it means too large.
        if request.content_length is None and len(request.get_data(cache=True)) >= limit_mb * MB:
            raise too_large(limit_mb, "MLQ_MAX_JSON_MB")
        request.get_json(cache=True)
    except RequestEntityTooLarge:
        raise too_large(limit_mb, "MLQ_MAX_JSON_MB") from None
    except BadRequest as exc:
        cause: BaseException = exc  # Flask wraps the parser's error in two BadRequests
        while isinstance(cause, BadRequest) and (cause.__cause__ or cause.__context__):
            cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        text = str(cause)
        hint = "; numbers must be finite, at most about 1.8e308 in size" if "infinity" in text else ""
        raise MalformedJson(f"the body is not valid JSON (UTF-8): {text}{hint}") from None


class FastJSON(DefaultJSONProvider):
    """Flask's JSON provider with orjson's parser: 5-10× faster, and strict about numbers (see check_json_body)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def wait_seconds(query_wait: int | None) -> tuple[int, bool]:
    """(seconds to wait, whether it came from `Prefer: wait=N`), capped at 30. `?wait=` wins over Prefer."""
    if query_wait is not None:
        return min(query_wait, MAX_WAIT_S), False
    match = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    if match:
        return min(int(match.group(1)), MAX_WAIT_S), True
    return 0, False
