"""Inference: POST /v1/models/{name}/predict. Rows are checked against the version's features here, so a bad
row is a 422 naming the row and the column and never reaches the queue."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from api.models import known_name
from api.parsing import json_body
from api.problems import ApiError
from api.schemas import Job, JobHeaders, ModelPath, PredictBody, Problem, WaitQuery
from api.services import services, tenant
from api.submit import submit
from training.errors import InvalidInput
from worker.contract import INFERENCE_QUEUE, PREDICT_TASK, PredictRequest

bp = APIBlueprint("predict", __name__, url_prefix="/v1/models", abp_tags=[Tag(name="inference")],
                  abp_security=[{"bearer": []}],
                  abp_responses={400: Problem, 401: Problem, 404: Problem, 409: Problem, 413: Problem,
                                 415: Problem, 422: Problem, 503: Problem})
MAX_REPORTED = 20  # enough to fix a batch; a 1000-row batch of mistakes needs no 1000-entry answer


def feature_types(manifest: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Feature names in order and their raw dtypes ("number" | "category"), from either manifest shape."""
    names, dtypes = [], dict(manifest.get("feature_dtypes") or {})
    for feature in manifest.get("features") or []:
        if isinstance(feature, dict):
            names.append(feature["name"])
            dtypes.setdefault(feature["name"], feature.get("dtype", ""))
        else:
            names.append(str(feature))
    return names, dtypes


def _value_problem(value: Any, dtype: str) -> str | None:
    if value is None:
        return None  # missing values are imputed by the model's preprocessing
    if isinstance(value, dict | list):
        return f"expected a single value, got {type(value).__name__}"
    if dtype == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        return f"expected a number, got {value!r}"
    return None


def check_rows(rows: list[Any], names: list[str], dtypes: dict[str, str]) -> None:
    """Raise InvalidInput listing (up to 20) rows with a missing, extra-length or mistyped feature."""
    errors: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            for name in names:
                problem = "missing feature" if name not in row else _value_problem(row[name], dtypes.get(name, ""))
                if problem:
                    errors.append({"loc": ["inputs", i, name], "msg": problem})
        elif len(row) != len(names):
            errors.append({"loc": ["inputs", i], "msg": f"has {len(row)} values, expected {len(names)} in the "
                                                        f"order {', '.join(names)}"})
        else:
            for name, value in zip(names, row, strict=True):
                problem = _value_problem(value, dtypes.get(name, ""))
                if problem:
                    errors.append({"loc": ["inputs", i, name], "msg": problem})
        if len(errors) >= MAX_REPORTED:
            break
    if errors:
        first = errors[0]
        where = f"row {first['loc'][1]}" + (f", column {first['loc'][2]!r}" if len(first["loc"]) > 2 else "")
        exc = InvalidInput(f"{where}: {first['msg']}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                           row=first["loc"][1], column=first["loc"][2] if len(first["loc"]) > 2 else None)
        exc.errors = errors
        raise exc


@bp.post("/<name>/predict", responses={200: Job, 202: Job})
@json_body
def predict(path: ModelPath, query: WaitQuery, header: JobHeaders, body: PredictBody) -> Response:
    """Queue a prediction on the `inference` workers: 202 with the job, or 200 when waited for."""
    svc = services()
    name = known_name(path.name)
    limit = svc.settings.max_batch_rows
    if len(body.inputs) > limit:
        raise ApiError(413, f"{len(body.inputs)} rows is more than the limit of {limit} per request "
                       "(MLQ_MAX_BATCH_ROWS); split the batch or use batch-predict", code="too_many_rows",
                       errors=[{"loc": ["inputs"], "msg": f"at most {limit} rows"}])

    def build(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        version = svc.registry.resolve(tenant(), name, body.version)
        check_rows(body.inputs, *feature_types(svc.registry.manifest(tenant(), name, version)))
        postprocess = body.postprocess.model_dump(exclude_none=True) if body.postprocess else {}
        message = PredictRequest(job_id=job_id, tenant=tenant(), model=name, version=version, inputs=body.inputs,
                                 postprocess=postprocess).encode()
        # The record keeps the reference, not the rows: job records stay small.
        return message, {"model": name, "version": version, "rows": len(body.inputs), "postprocess": postprocess}

    return submit(job_type="predict", model=name, task_name=PREDICT_TASK, queue=INFERENCE_QUEUE, headers=header,
                  wait=query.wait, build=build)
