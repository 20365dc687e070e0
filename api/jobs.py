"""Jobs: submit training, read, list and cancel. Everything is validated before anything is queued."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from api.limits import check_training_params
from api.parsing import json_body, wait_seconds
from api.replies import job_reply
from api.schemas import Job, JobHeaders, JobList, JobPath, JobsQuery, Problem, TrainBody, WaitQuery
from api.search import cancel_search
from api.services import services, tenant
from api.submit import submit
from api.train_checks import check_columns, check_dataset_fits
from api.waits import wait_for_job
from api.warm_start import check_warm_start
from store.contract import TRAIN_QUEUE, TRAIN_TASK, TrainRequest
from training.errors import ResourceNotFound
from training.params import check_algorithm, validate_params

log = logging.getLogger(__name__)

bp = APIBlueprint(
    "jobs",
    __name__,
    url_prefix="/v1/jobs",
    abp_tags=[Tag(name="jobs")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)


def _not_found(job_id: str) -> ResourceNotFound:
    return ResourceNotFound(f"no job {job_id!r}; list yours with GET /v1/jobs")


@bp.post("/train", responses={200: Job, 202: Job, 409: Problem, 415: Problem, 429: Problem})
@json_body
def train(query: WaitQuery, header: JobHeaders, body: TrainBody) -> Response:
    """Submit a training job: 202 with the job (200 when waited for and it ended in time)."""
    svc = services()
    check_algorithm(body.algorithm, body.task)

    def build(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        meta = svc.datasets.get(tenant(), body.dataset)
        columns = check_columns(body, meta)
        warm_start = check_warm_start(body, columns)  # before validate_params: it may fill in hidden_layers
        # A text target can only be classified: catch a regression-only algorithm before it is queued.
        task = body.task or ("classification" if columns[body.target]["dtype"] == "string" else None)
        check_dataset_fits(meta, body.target, body.features, body.task)  # few rows, one class, empty columns
        params = validate_params(body.algorithm, body.params, task)
        check_training_params(params)
        message = TrainRequest(
            job_id=job_id,
            tenant=tenant(),
            model=body.model,
            dataset_id=body.dataset,
            target=body.target,
            algorithm=body.algorithm,
            task=body.task,
            features=body.features,
            params=params,
            preprocessing=body.preprocessing.model_dump(),
            split=body.split.model_dump(),
            device=body.device,
            warm_start=warm_start,
        ).encode()
        record = {k: v for k, v in message.items() if k not in ("job_id", "tenant")}
        return message, record

    return submit(
        job_type="train",
        model=body.model,
        task_name=TRAIN_TASK,
        queue=TRAIN_QUEUE,
        headers=header,
        wait=query.wait,
        build=build,
    )


@bp.get("", responses={200: JobList})
def list_jobs(query: JobsQuery) -> Response:
    """The tenant's jobs, newest first, optionally filtered."""
    jobs = services().jobs
    items, next_cursor = jobs.list(
        tenant(), status=query.status, type=query.type, model=query.model, limit=query.limit, cursor=query.cursor
    )
    return jsonify({"items": [jobs.public(j) for j in items], "next_cursor": next_cursor})


@bp.get("/<job_id>", responses={200: Job})
def get_job(path: JobPath, query: WaitQuery) -> Response:
    """The job. With ?wait= or Prefer: wait=N, blocks until it ends (at most 30 s)."""
    jobs = services().jobs
    job = jobs.get_for(tenant(), path.job_id)
    if job is None:
        raise _not_found(path.job_id)
    seconds, from_prefer = wait_seconds(query.wait)
    job = wait_for_job(job, seconds)
    return job_reply(jobs.public(job), created=False, waited_s=seconds, from_prefer=from_prefer)


@bp.post("/<job_id>/cancel", responses={202: Job, 409: Problem})
def cancel_job(path: JobPath) -> tuple[Response, int]:
    """Cancel: a queued job never starts; a running training stops within one batch. 409 if already final."""
    svc = services()
    found = svc.jobs.get_for(tenant(), path.job_id)
    if found is None:
        raise _not_found(path.job_id)
    if found["type"] == "search":  # its queued and running trials are cancelled with it
        return cancel_search(path.job_id), 202
    job = svc.jobs.request_cancel(path.job_id)
    if job["status"] == "cancelled":
        try:  # the worker would skip it anyway (mark_running refuses); revoking just drops it sooner
            svc.celery.control.revoke(path.job_id)
        except Exception as exc:  # noqa: BLE001 - best effort
            log.warning("revoke of %s failed: %s", path.job_id, exc)
    return jsonify(svc.jobs.public(job)), 202
