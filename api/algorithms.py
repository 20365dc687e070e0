"""GET /v1/algorithms: every algorithm, the tasks it does and its parameter schema (training/params.py).

The dashboard builds its training form from this, so the form offers exactly what the API validates; a client can
use it the same way.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3.blueprint import APIBlueprint  # the submodules: flask_openapi3 re-exports implicitly
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel

from api.schemas import Problem
from training.params import ALGORITHM_TASKS, PARAM_SCHEMAS, ParamSpec

bp = APIBlueprint(
    "algorithms",
    __name__,
    url_prefix="/v1",
    abp_tags=[Tag(name="jobs")],
    abp_security=[{"bearer": []}],
    abp_responses={401: Problem, 503: Problem},
)


class ParamSchema(BaseModel):
    kind: str  # int | float | bool | str | int_list
    default: Any
    minimum: float | None
    maximum: float | None
    exclusive_minimum: bool
    choices: list[Any] | None
    nullable: bool
    max_items: int | None
    description: str
    help: str


class AlgorithmSchema(BaseModel):
    name: str
    tasks: list[str]
    params: dict[str, ParamSchema]


class AlgorithmList(BaseModel):
    items: list[AlgorithmSchema]


def describe(spec: ParamSpec) -> dict[str, Any]:
    return {
        "kind": spec.kind,
        "default": spec.default,
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        "exclusive_minimum": spec.exclusive_minimum,
        "choices": list(spec.choices) if spec.choices is not None else None,
        "nullable": spec.nullable,
        "max_items": spec.max_items,
        "description": spec.describe(),
        "help": spec.help,
    }


@bp.get("/algorithms", responses={200: AlgorithmList})
def list_algorithms() -> Response:
    """The algorithms a training may use, the tasks each does, and each parameter's type, range and default."""
    return jsonify(
        {
            "items": [
                {
                    "name": name,
                    "tasks": list(ALGORITHM_TASKS[name]),
                    "params": {key: describe(spec) for key, spec in schema.items()},
                }
                for name, schema in PARAM_SCHEMAS.items()
            ]
        }
    )
