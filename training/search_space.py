"""What a hyperparameter search tries: a grid or a seeded random sample, every trial checked up front. Stdlib only.

The API turns a search request into its list of trials with `plan_trials` before anything is queued, so a bad
value anywhere in the space (the 7th grid value, a random range whose upper end is out of bounds) is a 422 now,
not a failed trial an hour later. The list is then fixed: the workers run exactly these trials, and a random
search with the same seed gives the same trials (`random.Random(seed)`, never the global generator).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from training.errors import InvalidParams
from training.params import CLASSIFICATION, PARAM_SCHEMAS, REGRESSION, validate_params

STRATEGIES = ("grid", "random")
DISTRIBUTIONS = ("uniform", "log_uniform", "int", "choice")
DEFAULT_RANDOM_TRIALS = 10
# Which way each metric is better; the first of each task is the default a search optimises.
CLASSIFICATION_METRICS = {
    "f1": "maximize",
    "accuracy": "maximize",
    "precision": "maximize",
    "recall": "maximize",
    "roc_auc": "maximize",
}
REGRESSION_METRICS = {"rmse": "minimize", "mae": "minimize", "r2": "maximize"}
METRIC_DIRECTIONS = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}
DEFAULT_METRIC = {CLASSIFICATION: "f1", REGRESSION: "rmse"}
_SEARCH_KEYS = ("strategy", "space", "trials", "seed")


def _bad(loc: list[Any], msg: str) -> InvalidParams:
    return InvalidParams(f"{'.'.join(map(str, loc))}: {msg}", errors=[{"loc": loc, "msg": msg}])


def check_metric(metric: str | None, direction: str | None, task: str | None) -> tuple[str | None, str | None]:
    """(metric, direction) with the direction filled in; metric None means "the task's default", decided later."""
    known = CLASSIFICATION_METRICS if task == CLASSIFICATION else REGRESSION_METRICS if task else METRIC_DIRECTIONS
    if metric is not None and metric not in known:
        raise _bad(["metric"], f"must be one of {', '.join(known)}{' for ' + task if task else ''}, got {metric!r}")
    if direction is not None and direction not in ("maximize", "minimize"):
        raise _bad(["direction"], f"must be 'maximize' or 'minimize', got {direction!r}")
    if metric is not None and direction is None:
        direction = METRIC_DIRECTIONS[metric]
    return metric, direction


def split_search(search: dict[str, Any] | None) -> tuple[str, dict[str, Any], int, int]:
    """(strategy, space, trials, seed) of a `search` object: a bare grid {param: [values]}, or the long form
    {"strategy", "space", "trials", "seed"}."""
    if search is not None and not isinstance(search, dict):
        raise _bad(["search"], "must be an object")
    search = dict(search or {})
    long_form = "strategy" in search or "space" in search
    if not long_form:
        return "grid", search, 0, 0
    unknown = [k for k in search if k not in _SEARCH_KEYS]
    if unknown:
        raise _bad(["search", unknown[0]], f"unknown key; valid keys are {', '.join(_SEARCH_KEYS)}")
    strategy = search.get("strategy", "grid")
    if strategy not in STRATEGIES:
        raise _bad(["search", "strategy"], f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    space = search.get("space") or {}
    if not isinstance(space, dict):
        raise _bad(["search", "space"], "must be an object of parameter: values")
    if strategy == "grid":
        # A grid runs every combination: a trial count or a seed would be silently ignored, so they are refused.
        given = [k for k in ("trials", "seed") if k in search]
        if given:
            raise _bad(
                ["search", given[0]],
                f'a grid runs one trial per combination and takes no "{given[0]}"; use "strategy": "random" to '
                "sample a number of trials",
            )
    trials = search.get("trials", DEFAULT_RANDOM_TRIALS if strategy == "random" else 0)
    seed = search.get("seed", 0)
    for key, value in (("trials", trials), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(["search", key], f"must be an integer >= 0, got {value!r}")
    if strategy == "random" and trials < 1:
        raise _bad(["search", "trials"], "a random search needs trials >= 1")
    return strategy, space, trials, seed


def _check_grid(
    algorithm: str, fixed: dict[str, Any], space: dict[str, Any], task: str | None, where: list[Any]
) -> None:
    for name, values in space.items():
        if not isinstance(values, list) or not values:
            raise _bad([*where, name], "a grid lists the values to try: a non-empty array")
        for i, value in enumerate(values):
            _validate_one(algorithm, {**fixed, name: value}, task, [*where, name, i])


def _validate_one(algorithm: str, params: dict[str, Any], task: str | None, loc: list[Any]) -> dict[str, Any]:
    """validate_params, with errors re-located to where the value came from in the request."""
    try:
        return validate_params(algorithm, params, task)
    except InvalidParams as exc:
        errors = [{"loc": loc, "msg": e["msg"]} for e in exc.errors] or [{"loc": loc, "msg": exc.message}]
        raise InvalidParams(f"{'.'.join(map(str, loc))}: {exc.message}", errors=errors) from None


def _check_distribution(
    algorithm: str, fixed: dict[str, Any], name: str, dist: Any, task: str | None, where: list[Any]
) -> None:
    loc = [*where, name]
    if isinstance(dist, list):  # a bare list is a choice
        dist = {"choice": dist}
    if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise _bad(loc, f"must be an array of values or one of {{{', '.join(DISTRIBUTIONS)}: ...}}")
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        _check_grid(algorithm, fixed, {name: args}, task, where)
        return
    numbers = (
        isinstance(args, list)
        and len(args) == 2
        and all(isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) for a in args)
    )
    if not numbers or args[0] > args[1]:
        raise _bad([*loc, kind], "must be [low, high] with low <= high")
    if kind == "int" and not all(isinstance(a, int) for a in args):
        raise _bad([*loc, kind], "an int range takes whole numbers")
    if kind == "log_uniform" and args[0] <= 0:
        raise _bad([*loc, kind], "a log-uniform range must be above 0")
    for i, end in enumerate(args):  # both ends in bounds means every draw is (the schemas' ranges are intervals)
        _validate_one(algorithm, {**fixed, name: end}, task, [*loc, kind, i])


def _draw(rng: random.Random, dist: Any) -> Any:
    if isinstance(dist, list):
        dist = {"choice": dist}
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        return args[rng.randrange(len(args))]
    if kind == "int":
        return rng.randint(args[0], args[1])
    if kind == "log_uniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    return rng.uniform(args[0], args[1])


def grid_size(space: dict[str, Any]) -> int:
    return math.prod(len(v) if isinstance(v, list) else 1 for v in space.values())


def plan_trials(
    *,
    algorithm: str | None,
    params: dict[str, Any] | None,
    search: dict[str, Any] | None,
    algorithms: dict[str, Any] | None = None,
    task: str | None = None,
    max_trials: int = 100,
) -> list[dict[str, Any]]:
    """Every trial of a search as {"algorithm", "params"} (params validated, defaults not filled in).

    `search` is a grid {param: [values]} or {"strategy": "grid" | "random", "space", "trials", "seed"} for
    `algorithm` (with the fixed `params`); `algorithms` {name: space} compares several algorithms, each over its
    own space, with the strategy, trials and seed of `search`. Raises InvalidParams (a 422) for any bad value,
    and when the trials would number more than `max_trials`.
    """
    strategy, space, trials, seed = split_search(search)
    if algorithms:
        if algorithm is not None or space:
            raise _bad(["algorithms"], "with algorithms, give each its space there and no algorithm/search space")
        if not isinstance(algorithms, dict):
            raise _bad(["algorithms"], "must be an object of algorithm: space")
        plans: list[tuple[str, dict[str, Any], Any, list[Any]]] = [
            (name, {}, sub or {}, ["algorithms", name]) for name, sub in algorithms.items()
        ]
    else:
        if algorithm is None:
            raise _bad(["algorithm"], "give an algorithm (or several in algorithms)")
        where = ["search", "space"] if search and ("strategy" in search or "space" in search) else ["search"]
        plans = [(algorithm, dict(params or {}), space, where)]
    for name, fixed, sub, where in plans:
        if not isinstance(sub, dict):
            raise _bad(where, "must be an object of parameter: values")
        _validate_one(name, fixed, task, ["params"])  # also refuses an unknown algorithm or a wrong task
        overlap = sorted(set(fixed) & set(sub))
        if overlap:
            raise _bad([*where, overlap[0]], "is both a fixed param and searched; remove it from one of them")
        unknown = [p for p in sub if p not in PARAM_SCHEMAS[name]]
        if unknown:
            raise _bad([*where, unknown[0]], f"unknown parameter for {name}; allowed: {', '.join(PARAM_SCHEMAS[name])}")
    total = sum(grid_size(sub) for _, _, sub, _ in plans) if strategy == "grid" else trials * len(plans)
    if total > max_trials:
        raise InvalidParams(
            f"the search has {total} trials, more than the limit of {max_trials} "
            "(MLQ_MAX_SEARCH_TRIALS); narrow the space or lower trials",
            errors=[{"loc": ["search"], "msg": f"{total} trials > {max_trials}"}],
        )
    out: list[dict[str, Any]] = []
    rng = random.Random(seed)
    for name, fixed, sub, where in plans:
        if strategy == "grid":
            _check_grid(name, fixed, sub, task, where)
            names = list(sub)
            for values in itertools.product(*(sub[n] for n in names)):
                out.append({"algorithm": name, "params": {**fixed, **dict(zip(names, values, strict=True))}})
            continue
        for pname, dist in sub.items():
            _check_distribution(name, fixed, pname, dist, task, where)
        for _ in range(trials):
            drawn = {pname: _draw(rng, dist) for pname, dist in sub.items()}
            out.append({"algorithm": name, "params": {**fixed, **drawn}})
    for i, trial in enumerate(out):  # cheap, and catches what a per-value check cannot (a combination)
        _validate_one(trial["algorithm"], trial["params"], task, ["trials", i, "params"])
    return out
