"""Service routes without a token: /healthz, /readyz, /metrics and /openapi.json."""

from __future__ import annotations

import copy
from typing import Any

import redis
from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.schemas import Health, Readiness
from api.services import services
from store.contract import QUEUES, WORKER_QUEUES
from store.inference_queue import queue_depths
from store.liveness import WorkerLiveness

bp = APIBlueprint("service", __name__, abp_tags=[Tag(name="service")])


@bp.get("/healthz", responses={200: Health})
def healthz() -> Response:
    """200 while the process serves; checks nothing else (a Redis blip must not restart the API)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz", responses={200: Readiness, 503: Readiness})
def readyz() -> tuple[Response, int]:
    """200 when Redis answers and at least one live worker consumes each online queue (train, inference), else 503.

    The batch queue is listed too, but not required: online serving is ready without a batch worker."""
    client = services().redis
    body: dict[str, Any] = {"redis": "ok", "queues": {}}
    try:
        client.ping()
        workers = WorkerLiveness(client).counts()
        depths = queue_depths(client)
        for queue in WORKER_QUEUES:
            body["queues"][queue] = {"workers": workers.get(queue, 0), "depth": depths[queue]}
    except redis.RedisError as exc:
        body["redis"] = f"error: {type(exc).__name__}"
        body["queues"] = {q: {"workers": 0, "depth": None} for q in WORKER_QUEUES}
        return jsonify(body), 503
    ready = all(body["queues"][q]["workers"] >= 1 for q in QUEUES)
    response = jsonify(body)
    if not ready:
        response.headers["Retry-After"] = "5"
    return response, 200 if ready else 503


@bp.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics() -> Response:
    """Prometheus text format: jobs by type and status, job durations, queue depth, live workers."""
    registry = current_app.extensions["mlq_metrics"]
    return Response(
        generate_latest(registry),
        mimetype=CONTENT_TYPE_LATEST.split(";")[0],
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


@bp.get("/openapi.json", responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
def openapi() -> Response:
    """This OpenAPI 3.1 document."""
    doc = current_app.extensions.get("mlq_openapi")
    if doc is None:
        doc = current_app.extensions["mlq_openapi"] = problem_media_type(current_app.api_doc)  # type: ignore[attr-defined]
    return jsonify(doc)


def problem_media_type(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with every Problem response under `application/problem+json`, the type the API sends.

    flask-openapi3 documents every response model as application/json; clients (and schemathesis) check the
    Content-Type against the document.
    """
    doc = copy.deepcopy(doc)
    problem_ref = "#/components/schemas/Problem"
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                media = content.get("application/json")
                if media and media.get("schema", {}).get("$ref") == problem_ref:
                    content["application/problem+json"] = content.pop("application/json")
    return doc
