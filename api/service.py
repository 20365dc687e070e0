"""Service routes without a token: /healthz, /readyz, /metrics and /openapi.json."""

from __future__ import annotations

from typing import Any

import redis
from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.schemas import Health, Readiness
from api.services import services
from worker.contract import QUEUES
from worker.liveness import WorkerLiveness

bp = APIBlueprint("service", __name__, abp_tags=[Tag(name="service")])


@bp.get("/healthz", responses={200: Health})
def healthz() -> Response:
    """200 while the process serves; checks nothing else (a Redis blip must not restart the API)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz", responses={200: Readiness, 503: Readiness})
def readyz() -> tuple[Response, int]:
    """200 when Redis answers and at least one live worker consumes each queue, else 503."""
    client = services().redis
    body: dict[str, Any] = {"redis": "ok", "queues": {}}
    try:
        client.ping()
        workers = WorkerLiveness(client).counts()
        for queue in QUEUES:
            body["queues"][queue] = {"workers": workers.get(queue, 0), "depth": int(client.llen(queue))}
    except redis.RedisError as exc:
        body["redis"] = f"error: {type(exc).__name__}"
        body["queues"] = {q: {"workers": 0, "depth": None} for q in QUEUES}
        return jsonify(body), 503
    ready = all(q["workers"] >= 1 for q in body["queues"].values())
    response = jsonify(body)
    if not ready:
        response.headers["Retry-After"] = "5"
    return response, 200 if ready else 503


@bp.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics() -> Response:
    """Prometheus text format: jobs by type and status, job durations, queue depth, live workers."""
    registry = current_app.extensions["mlq_metrics"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST})


@bp.get("/openapi.json", responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
def openapi() -> Response:
    """This OpenAPI 3.1 document."""
    return jsonify(current_app.api_doc)  # type: ignore[attr-defined]
