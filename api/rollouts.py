"""Guarded rollouts: POST /v1/models/{name}/rollouts, a `rollout` job on the `train` queue.

Everything that can be refused is refused here, before anything is queued: an alias that names no version, a
candidate that is the baseline or cannot serve the same rows, steps that do not increase to 100, an unknown guard
key, an alias another rollout holds. The alias's policy at submit time travels with the job: it is what a tripped
guard or a cancel restores. The worker side is worker/rollout_task.py.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field

from api.model_routes import known_name
from api.parsing import json_body
from api.schemas import MODEL_NAME, Body, Job, JobHeaders, ModelPath, Problem, WaitQuery
from api.services import services, tenant
from api.submit import submit
from api.traffic import rollout_holder, schema_of
from store import rollouts
from store.contract import ROLLOUT_TASK, TRAIN_QUEUE
from store.rollouts import MAX_STEP_SECONDS, RolloutRequest, refuse
from store.traffic import TrafficPolicy, TrafficStore, problem

bp = APIBlueprint(
    "rollouts",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="models")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)


class RolloutBody(Body):
    alias: str = Field("production", max_length=63, pattern=MODEL_NAME, description="the alias to move")
    to: int = Field(ge=1, le=2**31 - 1, description="the candidate version")
    steps: list[Any] = Field(default_factory=lambda: [5, 25, 50, 100], description="percents, increasing to 100")
    step_seconds: float = Field(300, gt=0, le=MAX_STEP_SECONDS, description="the least time each step is watched")
    guard: dict[str, Any] | None = Field(
        None, description="max_error_rate, max_p99_ms, min_agreement, min_requests (per step)"
    )


def previous_policy(owner: str, name: str, alias: str) -> TrafficPolicy:
    """The alias's traffic now: its policy, else the one version the registry alias names."""
    found = TrafficStore(services().redis).get(owner, name, alias)
    if found is not None:
        return found
    aliases = services().registry.aliases(owner, name)
    if alias not in aliases:
        raise refuse(["body", "alias"], f"model {name!r} has no alias {alias!r}; point it at a version first")
    return TrafficPolicy({int(aliases[alias]): 100})


@bp.post("/<name>/rollouts", responses={200: Job, 202: Job, 409: Problem, 415: Problem, 429: Problem})
@json_body
def start_rollout(path: ModelPath, query: WaitQuery, header: JobHeaders, body: RolloutBody) -> Response:
    """Move an alias to version `to` step by step; each step is judged by the guard on live figures, and a trip,
    a cancel or an unservable candidate puts the alias back as it was."""
    owner, name = tenant(), known_name(path.name)
    steps = rollouts.check_steps(body.steps)
    guard = rollouts.check_guard(body.guard)
    previous = previous_policy(owner, name, body.alias)
    if body.to == previous.primary:
        raise refuse(["body", "to"], f"version {body.to} already serves alias {body.alias!r}")
    baseline_schema = schema_of(owner, name, previous.primary, ["body", "alias"])
    if schema_of(owner, name, body.to, ["body", "to"]) != baseline_schema:
        raise problem(["body", "to"], f"version {body.to} has other features than version {previous.primary}")

    def build(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        holder = rollout_holder(owner, name, body.alias) or rollouts.lock(
            services().redis, owner, name, body.alias, job_id
        )
        if holder is not None:
            raise refuse(["body", "alias"], f"rollout {holder} is already moving this alias; cancel it or wait")
        message = RolloutRequest(
            job_id=job_id,
            tenant=owner,
            model=name,
            alias=body.alias,
            to=body.to,
            steps=steps,
            step_seconds=body.step_seconds,
            guard=guard,
            previous=previous.to_dict(),
        ).encode()
        record = {k: v for k, v in message.items() if k not in ("job_id", "tenant")}
        return message, record

    return submit(
        job_type="rollout",
        model=name,
        task_name=ROLLOUT_TASK,
        queue=TRAIN_QUEUE,
        headers=header,
        wait=query.wait,
        build=build,
    )
