"""Batch prediction: POST /v1/models/{name}/batch-predict scores a whole uploaded dataset as a job on the `batch`
queue; GET /v1/jobs/{id}/output streams the file it wrote.

Everything that can be checked before the job is queued is checked here (model and version, dataset, the columns
the model needs and the passthrough columns, the output options), so a job that starts can only fail on its data.
The version is resolved now and travels with the job: a retried or resumed attempt scores with the same version
even if an alias moved meanwhile.
"""

from __future__ import annotations

from typing import Any

from flask import Response, send_file
from flask_openapi3 import APIBlueprint, Tag

from api.model_routes import known_name
from api.parsing import json_body
from api.problems import OutputGone, OutputNotReady
from api.schemas import BatchPredictBody, Job, JobHeaders, JobPath, ModelPath, Problem, WaitQuery
from api.servable import refuse_export
from api.services import services, tenant
from api.submit import submit
from store.backends import output_store
from store.batch_format import OutputColumns
from store.contract import BATCH_PREDICT_TASK, BATCH_QUEUE, BatchPredictRequest, JobType
from store.outputs import MEDIA_TYPES
from training.errors import ColumnNotFound, InvalidParams, ResourceNotFound

bp = APIBlueprint(
    "batch",
    __name__,
    url_prefix="/v1",
    abp_tags=[Tag(name="inference")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)
_FILE = {"type": "string", "format": "binary"}
OUTPUT_DOC: dict[Any, Any] = {
    200: {"description": "the output file", "content": {t: {"schema": _FILE} for t in MEDIA_TYPES.values()}},
    409: Problem,
}


def _check_columns(body: BatchPredictBody, meta: dict[str, Any], features: list[str], output_names: list[str]) -> None:
    available = [c["name"] for c in meta["columns"]]
    errors: list[dict[str, Any]] = [
        {"loc": ["dataset"], "msg": f"has no column {f!r}, which the model needs"}
        for f in features
        if f not in available
    ]
    errors += [
        {"loc": ["columns", i], "msg": f"the dataset has no column {c!r}"}
        for i, c in enumerate(body.columns)
        if c not in available
    ]
    if errors:
        raise ColumnNotFound(f"{errors[0]['msg']}; the dataset's columns: {', '.join(available)}", errors=errors)
    taken = set(output_names[len(body.columns) :])
    clash = [(i, c) for i, c in enumerate(body.columns) if c in taken or body.columns.index(c) != i]
    if clash:
        raise InvalidParams(
            f"columns: {clash[0][1]!r} is listed twice or is also the name of a prediction column "
            f"({', '.join(sorted(taken))}); pass it once, or rename it in the dataset",
            errors=[{"loc": ["columns", i], "msg": "duplicate output column"} for i, _ in clash],
        )


@bp.post("/models/<name>/batch-predict", responses={200: Job, 202: Job, 409: Problem, 415: Problem, 429: Problem})
@json_body
def batch_predict(path: ModelPath, query: WaitQuery, header: JobHeaders, body: BatchPredictBody) -> Response:
    """Score a whole dataset on the `batch` workers: 202 with the job; its result links to the output file."""
    svc = services()
    name = known_name(path.name)

    def build(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        version = svc.registry.resolve(tenant(), name, body.version)
        manifest = svc.registry.manifest(tenant(), name, version)
        refuse_export(name, version, manifest)
        features = [f["name"] if isinstance(f, dict) else str(f) for f in manifest.get("features") or []]
        task = manifest.get("task")
        output = body.postprocess.output if body.postprocess else None
        if output is not None and task != "classification":
            raise InvalidParams(
                "postprocess.output applies to classification models only; this model does "
                "regression (its output is one `value` column)",
                errors=[{"loc": ["postprocess", "output"], "msg": "classification only"}],
            )
        meta = svc.datasets.get(tenant(), body.dataset)
        columns = OutputColumns(body.columns, str(task), manifest.get("classes"), output or "both")
        _check_columns(body, meta, features, columns.names)
        message = BatchPredictRequest(
            job_id=job_id,
            tenant=tenant(),
            model=name,
            version=version,
            dataset_id=body.dataset,
            postprocess={"output": output} if output else {},
            columns=body.columns,
            format=body.format,
        ).encode()
        record = {k: v for k, v in message.items() if k not in ("job_id", "tenant")}
        return message, {**record, "rows": meta["rows"]}

    return submit(
        job_type=JobType.BATCH_PREDICT.value,
        model=name,
        task_name=BATCH_PREDICT_TASK,
        queue=BATCH_QUEUE,
        headers=header,
        wait=query.wait,
        build=build,
    )


@bp.get("/jobs/<job_id>/output", responses=OUTPUT_DOC)
def job_output(path: JobPath) -> Response:
    """The output file of a succeeded batch prediction, streamed with its length and a file name."""
    svc = services()
    job = svc.jobs.get_for(tenant(), path.job_id)
    if job is None:
        raise ResourceNotFound(f"no job {path.job_id!r}; list yours with GET /v1/jobs")
    if job["type"] != JobType.BATCH_PREDICT.value:
        raise ResourceNotFound(
            f"job {path.job_id} is a {job['type']} job; only batch-predict jobs have an output "
            "file (see its result instead)"
        )
    if job["status"] != "succeeded":
        detail = {"queued": "has not started", "running": "is still running"}.get(
            job["status"], f"ended {job['status']} and kept no output"
        )
        headers = {"Retry-After": "5"} if job["status"] in ("queued", "running") else {}
        raise OutputNotReady(f"job {path.job_id} {detail}; its output is ready once it succeeded", headers=headers)
    output = (job.get("result") or {}).get("output") or {}
    sha256 = output.get("sha256")
    # From this host's disk, else (MLQ_ARTIFACTS) from the store through the cache, checked against the sha256.
    file = output_store(svc.settings).path(
        job["id"], str(output.get("filename", "")), sha256 if isinstance(sha256, str) else None
    )
    if file is None:
        raise OutputGone(f"the output of job {path.job_id} no longer exists; run the batch prediction again")
    # send_file streams the file (wsgi.file_wrapper) with Content-Length, an attachment file name, and answers
    # Range and If-None-Match requests (the ETag is the file's sha256), so a broken download can resume.
    return send_file(
        file,
        mimetype=MEDIA_TYPES.get(output.get("format", ""), "application/octet-stream"),
        as_attachment=True,
        download_name=file.name,
        conditional=True,
        etag=sha256 if isinstance(sha256, str) else True,
    )
