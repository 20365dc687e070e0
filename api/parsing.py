"""Request checks that run before flask-openapi3's validation: content type (415) and well-formed JSON (400).

flask-openapi3 reads bodies with `get_json(silent=True)`, which turns a malformed body or a wrong content type
into `None` and then into a confusing 422. Views that take a JSON body are marked with `@json_body`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request

from api.problems import ApiError

F = TypeVar("F", bound=Callable[..., Any])
MAX_WAIT_S = 30
_PREFER_WAIT = re.compile(r"(?:^|[,;])\s*wait\s*=\s*\"?(\d{1,9})\"?\s*(?=$|[,;])", re.IGNORECASE)


def json_body(view: F) -> F:
    """Mark a view as taking a JSON object body (functools.wraps copies the mark onto the wrapper)."""
    view.json_body = True  # type: ignore[attr-defined]
    return view


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads(..., parse_constant=) constructs a new decoder on every call (5 % of the API's CPU).
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def check_json_body() -> None:
    """A before_request hook: 415 for a non-JSON content type, 400 for a body that is not valid JSON.

    Every JSON body is checked (also on routes not marked `@json_body`, e.g. PUT alias), because flask-openapi3
    parses it afterwards with a plain `get_json()`, where nesting deeper than Python's recursion limit would
    raise RecursionError, a 500.
    """
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "json_body", False) and not request.is_json:
        raise ApiError(415, f"expected Content-Type: application/json, got {request.mimetype or 'none'!r}",
                       code="unsupported_media_type")
    if not request.is_json:
        return
    raw = request.get_data(cache=True)
    try:
        # What json.loads does with bytes: detect UTF-8/16/32 (a UTF-8 BOM included), then decode.
        _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="malformed_json") from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply to be read; flatten it", code="malformed_json") from None


def wait_seconds(query_wait: int | None) -> tuple[int, bool]:
    """(seconds to wait, whether it came from `Prefer: wait=N`), capped at 30. `?wait=` wins over Prefer."""
    if query_wait is not None:
        return min(query_wait, MAX_WAIT_S), False
    match = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    if match:
        return min(int(match.group(1)), MAX_WAIT_S), True
    return 0, False
