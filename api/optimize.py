"""Optimising a version: POST /v1/models/{name}/versions/{version}/optimize, a job on the `train` queue.

The request is checked against the parent's manifest (read, never loaded: the API holds no model) with
training/optimize_params.py, so a method that does not apply is a 422 naming those that do, before anything is
queued. The worker (worker/optimize_task.py) registers the child version and reports the comparison.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from api.limits import check_training_params
from api.model_routes import known_name
from api.parsing import json_body
from api.schemas import Job, JobHeaders, OptimizeBody, Problem, VersionPath, WaitQuery
from api.services import services, tenant
from api.submit import submit
from store.contract import OPTIMIZE_TASK, TRAIN_QUEUE, OptimizeRequest
from training.optimize_params import validate_optimize

bp = APIBlueprint(
    "optimize",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="models")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)


@bp.post(
    "/<name>/versions/<int:version>/optimize", responses={200: Job, 202: Job, 409: Problem, 415: Problem, 429: Problem}
)
@json_body
def optimize(path: VersionPath, query: WaitQuery, header: JobHeaders, body: OptimizeBody) -> Response:
    """Quantize, prune, distill or export a version: a job that registers a new version and compares it with its
    parent (artifact bytes, 1- and 64-row latency, test metrics)."""
    name = known_name(path.name)
    manifest = services().registry.manifest(tenant(), name, path.version)
    params = validate_optimize(body.method, dict(body.model_extra or {}), manifest)
    # The same ceilings as a training (MLQ_MAX_EPOCHS, MLQ_MAX_HIDDEN_UNITS): these methods train, too.
    if body.method == "distill":
        check_training_params(params)
    elif body.method == "prune":
        check_training_params({"epochs": params["finetune_epochs"]})

    def build(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        message = OptimizeRequest(
            job_id=job_id,
            tenant=tenant(),
            model=name,
            version=path.version,
            method=body.method,
            params=params,
            device=body.device,
        ).encode()
        record = {k: v for k, v in message.items() if k not in ("job_id", "tenant")}
        return message, record

    return submit(
        job_type="optimize",
        model=name,
        task_name=OPTIMIZE_TASK,
        queue=TRAIN_QUEUE,
        headers=header,
        wait=query.wait,
        build=build,
    )
