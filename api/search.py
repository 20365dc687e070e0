"""POST /v1/jobs/search: a hyperparameter search, every trial planned and validated before anything is queued.

The search is one job (type `search`) whose message fans its trials out as `train` jobs (store/searches.py);
cancelling it (POST /v1/jobs/{id}/cancel) cancels its trials too.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from api.limits import check_training_params
from api.parsing import json_body
from api.schemas import Job, JobHeaders, Problem, SearchBody, WaitQuery
from api.services import services, tenant
from api.submit import submit
from api.train_checks import check_columns
from store.backends import artifact_store
from store.contract import SEARCH_TASK, TRAIN_QUEUE, SearchRequest
from store.ids import new_id
from store.searches import Searches
from training.params import validate_params
from training.search_space import check_metric, plan_trials

bp = APIBlueprint(
    "search",
    __name__,
    url_prefix="/v1/jobs",
    abp_tags=[Tag(name="jobs")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)


def searches() -> Searches:
    svc = services()
    return Searches(svc.jobs, svc.registry, svc.settings.searches_dir, artifact_store(svc.settings))


def cancel_search(job_id: str) -> Response:
    """The cancel route's answer for a search: the search and its unfinished trials are cancelled."""
    return jsonify(services().jobs.public(searches().cancel(job_id)))


@bp.post("/search", responses={200: Job, 202: Job, 409: Problem, 415: Problem, 429: Problem})
@json_body
def search(query: WaitQuery, header: JobHeaders, body: SearchBody) -> Response:
    """Submit a hyperparameter search: one train job per trial, the best registered (202 with the search job)."""
    svc = services()

    def build(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        meta = svc.datasets.get(tenant(), body.dataset)
        columns = check_columns(body, meta)
        # A text target can only be classified: refuse regression-only algorithms and metrics now.
        task = body.task or ("classification" if columns[body.target]["dtype"] == "string" else None)
        metric, direction = check_metric(body.metric, body.direction, task)
        planned = plan_trials(
            algorithm=body.algorithm,
            params=body.params,
            search=body.search,
            algorithms=body.algorithms,
            task=task,
            max_trials=svc.settings.max_search_trials,
        )
        for trial in planned:
            check_training_params(validate_params(trial["algorithm"], trial["params"], task))
        trials = [{"id": new_id("job"), **trial} for trial in planned]
        message = SearchRequest(
            job_id=job_id,
            tenant=tenant(),
            model=body.model,
            dataset_id=body.dataset,
            target=body.target,
            trials=trials,
            task=body.task,
            features=body.features,
            preprocessing=body.preprocessing.model_dump(),
            split=body.split.model_dump(),
            device=body.device,
            metric=metric,
            direction=direction,
            rank_by=body.rank_by,
        ).encode()
        record = {k: v for k, v in message.items() if k not in ("job_id", "tenant")}
        return message, record

    return submit(
        job_type="search",
        model=body.model,
        task_name=SEARCH_TASK,
        queue=TRAIN_QUEUE,
        headers=header,
        wait=query.wait,
        build=build,
    )
