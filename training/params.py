"""Parameter schemas of every algorithm, and their validation. Stdlib only.

This is the single source of truth for which parameters each algorithm takes, their types, ranges and
defaults. The API validates requests with it before anything is queued; the training library validates again
before it fits (a job can come from `mlq train --local`, too). `training.algorithms.ALGORITHMS` must have exactly
these names: a test keeps them equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from training.errors import InvalidParams, UnknownAlgorithm

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its kind (int, float, bool, str, int_list), default and allowed values."""

    kind: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False  # for learning rates and C: 0 itself is meaningless
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    max_items: int | None = None  # int_list only
    help: str = ""  # what the parameter does, where its name does not say it

    def describe(self) -> str:
        """The allowed values in words (JSON spellings: a request's), for error messages and form hints."""
        if self.choices is not None:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        low = "" if self.minimum is None else (f"> {self.minimum}" if self.exclusive_minimum else f">= {self.minimum}")
        high = "" if self.maximum is None else f"<= {self.maximum}"
        bounds = " and ".join(b for b in (low, high) if b)
        what = {"int_list": "a list of integers", "int": "an integer", "float": "a number"}.get(self.kind, self.kind)
        if self.kind == "int_list":
            return f"{what}, each {bounds}, 1 to {self.max_items} items"
        return f"{what} {bounds}".strip() + (" or null" if self.nullable else "")


_SEED = ParamSpec("int", 0, 0, 2**32 - 1)
# "balanced" weighs each class by n_rows / (n_classes * its rows), so a rare class counts as much as a common one.
_CLASS_WEIGHT = ParamSpec("str", None, choices=("balanced", None), nullable=True)

PARAM_SCHEMAS: dict[str, dict[str, ParamSpec]] = {
    "logistic_regression": {
        "C": ParamSpec("float", 1.0, 0.0, 1e6, exclusive_minimum=True),
        "max_iter": ParamSpec("int", 1000, 1, 100_000),
        "class_weight": _CLASS_WEIGHT,
    },
    "random_forest": {
        "n_estimators": ParamSpec("int", 100, 1, 2000),
        "max_depth": ParamSpec("int", None, 1, 1000, nullable=True),
        "min_samples_leaf": ParamSpec("int", 1, 1, 100_000),
        "seed": _SEED,
        "class_weight": _CLASS_WEIGHT,
    },
    "gradient_boosting": {
        "n_estimators": ParamSpec("int", 100, 1, 5000),
        "learning_rate": ParamSpec("float", 0.1, 0.0, 1.0, exclusive_minimum=True),
        "max_depth": ParamSpec("int", 3, 1, 100),
        "subsample": ParamSpec("float", 1.0, 0.0, 1.0, exclusive_minimum=True),
        "seed": _SEED,
        "class_weight": _CLASS_WEIGHT,  # as sample weights: scikit-learn's gradient boosting has no class_weight
    },
    "linear_regression": {
        "fit_intercept": ParamSpec("bool", True),
    },
    "ridge": {
        "alpha": ParamSpec("float", 1.0, 0.0, 1e6),
        "fit_intercept": ParamSpec("bool", True),
    },
    "mlp": {
        "hidden_layers": ParamSpec("int_list", [64, 64], 1, 4096, max_items=8),
        "epochs": ParamSpec("int", 20, 1, 1000),
        "batch_size": ParamSpec("int", 64, 1, 65_536),
        "lr": ParamSpec("float", 1e-3, 0.0, 10.0, exclusive_minimum=True),
        "optimizer": ParamSpec("str", "adam", choices=("adam", "sgd")),
        "weight_decay": ParamSpec("float", 0.0, 0.0, 1.0),
        "early_stopping_patience": ParamSpec(
            "int",
            5,
            0,
            1000,
            help="epochs without improvement of val_loss (loss without a validation split) before training stops "
            "early and keeps its best epoch; 0 turns early stopping off",
        ),
        "seed": _SEED,
        "class_weight": _CLASS_WEIGHT,  # a weighted cross-entropy loss
    },
}

# Which tasks each algorithm can do.
ALGORITHM_TASKS: dict[str, tuple[str, ...]] = {
    "logistic_regression": (CLASSIFICATION,),
    "random_forest": TASKS,
    "gradient_boosting": TASKS,
    "linear_regression": (REGRESSION,),
    "ridge": (REGRESSION,),
    "mlp": TASKS,
}

ALGORITHM_NAMES: tuple[str, ...] = tuple(PARAM_SCHEMAS)


def check_algorithm(algorithm: str, task: str | None = None) -> None:
    """Refuse an unknown algorithm (listing the valid ones) or one that cannot do `task`."""
    if algorithm not in PARAM_SCHEMAS:
        raise UnknownAlgorithm(
            f"unknown algorithm {algorithm!r}; valid algorithms: {', '.join(ALGORITHM_NAMES)}",
            errors=[{"loc": ["algorithm"], "msg": f"must be one of {', '.join(ALGORITHM_NAMES)}"}],
        )
    if task is not None and task not in ALGORITHM_TASKS[algorithm]:
        fits = [a for a in ALGORITHM_NAMES if task in ALGORITHM_TASKS[a]]
        raise InvalidParams(
            f"algorithm {algorithm!r} does not do {task}; for {task} use one of {', '.join(fits)}",
            errors=[{"loc": ["algorithm"], "msg": f"{algorithm} supports {', '.join(ALGORITHM_TASKS[algorithm])}"}],
        )


def _check_value(name: str, spec: ParamSpec, value: Any) -> str | None:
    """Return an error message for `value`, or None when it is allowed."""
    if value is None:
        return None if spec.nullable else f"{name} must be {spec.describe()}, not null"
    if spec.choices is not None:
        return None if value in spec.choices else f"{name} must be {spec.describe()}, got {value!r}"
    if spec.kind == "bool":
        return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
    if spec.kind == "int_list":
        if not isinstance(value, list) or not value or (spec.max_items and len(value) > spec.max_items):
            return f"{name} must be {spec.describe()}, got {value!r}"
        for item in value:
            problem = _check_number(name, spec, item, "int")
            if problem:
                return problem
        return None
    if spec.kind in ("int", "float"):
        return _check_number(name, spec, value, spec.kind)
    return None if isinstance(value, str) else f"{name} must be a string, got {value!r}"


def _check_number(name: str, spec: ParamSpec, value: Any, kind: str) -> str | None:
    # bool is an int subclass in Python; `true` is never a valid number here.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and isinstance(value, float)):
        return f"{name} must be {spec.describe()}, got {value!r}"
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        return f"{name} must be a finite number, got {value!r}"
    if spec.minimum is not None and (number <= spec.minimum if spec.exclusive_minimum else number < spec.minimum):
        return f"{name} must be {spec.describe()}, got {value!r}"
    if spec.maximum is not None and number > spec.maximum:
        return f"{name} must be {spec.describe()}, got {value!r}"
    return None


def validate_params(algorithm: str, params: dict[str, Any] | None, task: str | None = None) -> dict[str, Any]:
    """Check `params` against the algorithm's schema and return them with defaults filled in.

    Every problem is reported at once (unknown keys, wrong types, out-of-range values), each naming the parameter
    and the allowed values, so a user fixes the request in one go.
    """
    check_algorithm(algorithm, task)
    schema = PARAM_SCHEMAS[algorithm]
    params = params or {}
    if not isinstance(params, dict):
        raise InvalidParams("params must be a JSON object", errors=[{"loc": ["params"], "msg": "must be an object"}])
    errors: list[dict[str, Any]] = []
    for key in params:
        if key not in schema:
            allowed = ", ".join(schema) or "none"
            errors.append({"loc": ["params", key], "msg": f"unknown parameter for {algorithm}; allowed: {allowed}"})
    for key, spec in schema.items():
        if key in params:
            problem = _check_value(key, spec, params[key])
            if problem:
                errors.append({"loc": ["params", key], "msg": problem})
    if task == REGRESSION and params.get("class_weight") is not None:
        errors.append({"loc": ["params", "class_weight"], "msg": "class_weight is for classification only"})
    if errors:
        # Each error names its key, unless its message starts with it ("epochs must be ..."): a substring test
        # left out "epoch" because "epochs" was in the list of allowed names.
        raise InvalidParams(
            "invalid params: "
            + "; ".join(
                e["msg"] if e["msg"].startswith(f"{e['loc'][-1]} ") else f"{e['loc'][-1]}: {e['msg']}" for e in errors
            ),
            errors=errors,
        )
    # Copy list defaults so a caller mutating its params never changes the schema.
    out = {key: (list(s.default) if isinstance(s.default, list) else s.default) for key, s in schema.items()}
    out.update(params)
    return out
