"""The post-processing options of a prediction, checked against the model's task and classes.

Stdlib only (training.errors aside): the API runs the same check at submit, so a `top_k` larger than the classes
or a `proba` asked of a regressor is a 422 at once, not a failed job after a worker has loaded the model.
"""

from __future__ import annotations

from typing import Any

from training.errors import InvalidParams

CLASSIFICATION = "classification"
OUTPUTS = ("label", "proba", "both")
SORTS = ("desc", "asc", "none")
POSTPROCESS_KEYS = ("output", "top_k", "threshold", "sort")


def _bad(key: str, msg: str) -> InvalidParams:
    return InvalidParams(f"postprocess.{key} {msg}", errors=[{"loc": ["postprocess", key], "msg": msg}])


def check_postprocess(postprocess: dict[str, Any] | None, task: str, n_classes: int) -> dict[str, Any]:
    """The postprocess options with defaults filled in; InvalidParams naming the offending key otherwise."""
    if postprocess is None:
        postprocess = {}
    if not isinstance(postprocess, dict):
        raise InvalidParams(
            f"postprocess must be an object, got {type(postprocess).__name__}",
            errors=[{"loc": ["postprocess"], "msg": "must be an object"}],
        )
    unknown = sorted(k for k in postprocess if k not in POSTPROCESS_KEYS)
    if unknown:
        raise _bad(unknown[0], f"is not a known option; valid options: {', '.join(POSTPROCESS_KEYS)}")
    classification = task == CLASSIFICATION
    if not classification:
        # A regression prediction is one value: labels, probabilities and cut-offs have no meaning there.
        for key in ("output", "top_k", "threshold"):
            if key in postprocess:
                raise _bad(key, "applies to classification models only; this model does regression")
    out = {
        "output": postprocess.get("output", "both"),
        "top_k": postprocess.get("top_k"),
        "threshold": postprocess.get("threshold"),
        "sort": postprocess.get("sort", "none"),
    }
    if out["output"] not in OUTPUTS:
        raise _bad("output", f"must be one of {', '.join(OUTPUTS)}, got {out['output']!r}")
    if out["sort"] not in SORTS:
        raise _bad("sort", f"must be one of {', '.join(SORTS)}, got {out['sort']!r}")
    top_k = out["top_k"]
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n_classes):
        raise _bad("top_k", f"must be an integer from 1 to {n_classes} (the number of classes), got {top_k!r}")
    threshold = out["threshold"]
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise _bad("threshold", f"must be a number from 0 to 1, got {threshold!r}")
        out["threshold"] = float(threshold)
    return out
