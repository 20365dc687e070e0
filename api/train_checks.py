"""What the upload already knows about a dataset, checked against a training request before it is queued.

A dataset may serve several targets (and batch predictions), so the upload only records facts about each column
(rows, `dtype`, `missing`, `distinct`; store/datasets.py) and refuses nothing for them. Whether those facts make
*this* training impossible depends on the target, the features and the task, so it is judged here, at submit:
a 422 now instead of a job that fails on a worker minutes later. Only what is certain is refused; what depends on
cleaning (duplicates, `missing: drop`) is still the worker's to find.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.errors import ColumnNotFound, DataError

if TYPE_CHECKING:
    from api.schemas import SearchBody, TrainBody

# training.data.MIN_ROWS (kept equal by tests/unit/test_train_checks.py; training.data imports pandas).
MIN_ROWS = 10


def check_dataset_fits(meta: dict[str, Any], target: str, features: list[str] | None, task: str | None) -> None:
    """DataError listing every certain reason the dataset cannot train `target` as `task` (None: inferred)."""
    columns = {c["name"]: c for c in meta["columns"]}
    rows = int(meta["rows"])
    label = columns[target]
    labelled = rows - int(label.get("missing", 0))
    errors: list[dict[str, Any]] = []
    if labelled == 0:
        errors.append({"loc": ["target"], "msg": f"column {target!r} has no values; pick a column with labels"})
    elif labelled < MIN_ROWS:
        errors.append(
            {
                "loc": ["dataset"],
                "msg": f"only {labelled} of its {rows} rows have a {target!r} value; "
                f"training needs at least {MIN_ROWS}: upload more rows",
            }
        )
    if task == "regression" and label["dtype"] == "string" and labelled:
        errors.append(
            {
                "loc": ["task"],
                "msg": f"regression needs a numeric target, but {target!r} holds text; "
                "use task 'classification' or pick a numeric target",
            }
        )
    # A text target is always classified; `distinct` is absent for datasets uploaded before it was recorded.
    classified = task == "classification" or (task is None and label["dtype"] == "string")
    if classified and label.get("distinct") == 1:
        errors.append(
            {
                "loc": ["target"],
                "msg": f"column {target!r} has only one class; classification needs "
                "two or more: pick another target or upload rows of other classes",
            }
        )
    names = features if features is not None else [name for name in columns if name != target]
    for name in names:
        if int(columns[name].get("missing", 0)) >= rows:
            loc: list[str | int] = ["features", features.index(name)] if features is not None else ["features"]
            errors.append({"loc": loc, "msg": f"feature column {name!r} has no values; exclude it from features"})
    if errors:
        raise DataError(
            f"dataset {meta['id']} cannot train this model: " + "; ".join(e["msg"] for e in errors), errors=errors
        )


def check_columns(body: TrainBody | SearchBody, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dataset's columns by name; ColumnNotFound naming each missing column and listing the available ones."""
    columns = {c["name"]: c for c in meta["columns"]}
    available = ", ".join(columns)
    wanted = [(["target"], body.target)] + [(["features", i], f) for i, f in enumerate(body.features or [])]
    missing = [(loc, name) for loc, name in wanted if name not in columns]
    if missing:
        names = ", ".join(repr(name) for _, name in missing)
        raise ColumnNotFound(
            f"column {names} not found in dataset {meta['id']}; available columns: {available}",
            errors=[
                {"loc": loc, "msg": f"column {name!r} is not in the dataset; available: {available}"}
                for loc, name in missing
            ],
        )
    if body.features is not None:
        if body.target in body.features:
            raise DataError(
                f"the target {body.target!r} cannot also be a feature; remove it from features",
                errors=[{"loc": ["features"], "msg": "contains the target"}],
            )
        if len(set(body.features)) != len(body.features):
            raise DataError("features lists a column twice", errors=[{"loc": ["features"], "msg": "duplicates"}])
    return columns
