"""Serving settings per model: batching policy and queue cap (`PUT /v1/models/{name}/serving`), and what a
prediction request says about its own serving: a deadline (X-Request-Timeout-Ms, OIP `timeout`) and a priority.

The policies live in Redis (store/serving.py); the inference workers read the batching ones, this process reads
`max_queued` (cached for POLICY_TTL_S) to refuse a request at once, with 429 + Retry-After, when its model
already has that many waiting.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from flask import Response, current_app, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from api.model_names import known_name
from api.problems import InvalidRequest
from api.schemas import ModelPath, Problem
from api.services import services, tenant
from store import serving
from store.contract import PRIORITIES
from store.jobs import now_rfc3339
from training.errors import ResourceNotFound

bp = APIBlueprint(
    "serving",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="models")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)
TIMEOUT_HEADER = "X-Request-Timeout-Ms"
MAX_TIMEOUT_MS = 30_000  # the longest a request waits for its answer (api.parsing.MAX_WAIT_S)
MAX_DELAY_MS = 1000.0


class ServingBody(BaseModel):
    model_config = {"extra": "forbid"}
    alias: str | None = Field(None, description="set the policy of this alias (default: the model's own)")
    max_batch_size: int | None = Field(None, ge=1, le=100_000, description="rows in one forward pass")
    max_queue_delay_ms: float | None = Field(
        None, ge=0, le=MAX_DELAY_MS, description="how long a worker may hold a batch's first request to fill it"
    )
    max_queued: int | None = Field(None, ge=0, description="queued requests before 429; 0: no cap")
    reset: bool = Field(False, description="clear the level's settings first (back to the defaults)")


class Serving(BaseModel):
    model: dict[str, Any]
    aliases: dict[str, Any]
    effective: dict[str, Any]
    defaults: dict[str, Any]


def defaults() -> serving.Policy:
    settings = services().settings
    return serving.Policy(settings.batch_max_size, settings.batch_max_delay_ms, 0)


def serving_view(owner: str, name: str) -> dict[str, Any]:
    """The stored levels, the effective policy of the model and of each alias, and the defaults."""
    doc = serving.read_document(services().redis, owner, name)
    aliases = services().registry.aliases(owner, name)
    base = defaults()
    return {
        "model": doc["model"],
        "aliases": doc["aliases"],
        "effective": {
            "model": serving.effective(doc, None, base).as_dict(),
            **{a: serving.effective(doc, a, base).as_dict() for a in sorted(set(aliases) | set(doc["aliases"]))},
        },
        "defaults": base.as_dict(),
    }


@bp.get("/<name>/serving", responses={200: Serving})
def get_serving(path: ModelPath) -> Response:
    """The model's serving policy: batching (max_batch_size, max_queue_delay_ms) and its queue cap."""
    owner, name = tenant(), known_name(path.name)
    services().registry.get_model(owner, name)  # 404 for an unknown model
    return jsonify(serving_view(owner, name))


@bp.put("/<name>/serving", responses={200: Serving})
def put_serving(path: ModelPath, body: ServingBody) -> Response:
    """Set the model's (or one alias's) batching policy and queue cap; workers apply it within a second."""
    owner, name = tenant(), known_name(path.name)
    registry = services().registry
    registry.get_model(owner, name)
    if body.alias is not None and body.alias not in registry.aliases(owner, name):
        raise ResourceNotFound(f"model {name!r} has no alias {body.alias!r}; create it with PUT .../aliases/{{alias}}")
    limit = services().settings.max_batch_rows
    if body.max_batch_size is not None and body.max_batch_size > limit:
        raise InvalidRequest(
            f"max_batch_size {body.max_batch_size} is above MLQ_MAX_BATCH_ROWS ({limit})",
            errors=[{"loc": ["max_batch_size"], "msg": f"at most {limit}"}],
        )
    values = {f: getattr(body, f) for f in serving.FIELDS if f in body.model_fields_set}
    if body.reset:
        values = {**dict.fromkeys(serving.FIELDS), **values}
    serving.write_level(services().redis, owner, name, body.alias, values)
    return jsonify(serving_view(owner, name))


def queue_cap(owner: str, name: str, alias: str | None) -> int:
    """The model's (alias's) max_queued, cached per process for POLICY_TTL_S: on the predict path, a dict lookup."""
    cache: dict[tuple[str, str, str | None], tuple[float, int]] = current_app.extensions.setdefault(
        "mlq_serving_caps", {}
    )
    now = time.monotonic()
    found = cache.get((owner, name, alias))
    if found is None or now - found[0] >= serving.POLICY_TTL_S:
        doc = serving.read_document(services().redis, owner, name)
        found = (now, serving.effective(doc, alias, defaults()).max_queued)
        cache[(owner, name, alias)] = found
    return found[1]


class ServeOptions(NamedTuple):
    deadline_ms: int | None = None  # epoch ms; None: no deadline
    priority: str = "normal"

    def wait_s(self, seconds: float) -> float:
        """The wait, cut to the deadline: an answer after it is never computed."""
        if self.deadline_ms is None:
            return seconds
        _, now_ms = now_rfc3339()
        return max(0.0, min(seconds, (self.deadline_ms - now_ms) / 1000))


def deadline_after(timeout_ms: int, where: str) -> int:
    """The epoch-ms deadline `timeout_ms` from now; a timeout of 0 or less is a deadline already past (422)."""
    if timeout_ms <= 0:
        raise InvalidRequest(
            f"{where} is {timeout_ms}: a deadline already in the past; send the milliseconds the client will wait",
            errors=[{"loc": [where], "msg": "must be a positive number of milliseconds"}],
        )
    _, now_ms = now_rfc3339()
    return now_ms + min(timeout_ms, MAX_TIMEOUT_MS)


def header_timeout_ms() -> int | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidRequest(
            f"{TIMEOUT_HEADER} must be an integer number of milliseconds, got {raw!r}",
            errors=[{"loc": ["header", TIMEOUT_HEADER], "msg": "must be an integer"}],
        ) from None


def priority_of(value: Any, where: str) -> str:
    """ "high" | "normal" (default); Triton's integer priorities too: 1 (its highest) is high, others normal."""
    if value is None:
        return "normal"
    if value in PRIORITIES:
        return str(value)
    if type(value) is int and value >= 0:
        return "high" if value == 1 else "normal"
    raise InvalidRequest(
        f'{where} must be "high" or "normal", got {value!r}',
        errors=[{"loc": [where], "msg": 'must be "high" or "normal"'}],
    )
