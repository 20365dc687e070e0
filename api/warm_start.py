"""Checks of a training's `warm_start` that the API can make before anything is queued (stdlib only).

The base version must exist and be an mlp, and the training must use its features (in its order), task, hidden
layers and classes; each mismatch is a 422 saying what differs. The classes are read from the dataset's target
column with the csv module (no pandas here); the worker checks them again exactly, on the parsed data.
"""

from __future__ import annotations

import csv
from typing import Any

from api.services import services, tenant
from training.errors import InvalidParams, ResourceNotFound

MAX_DISTINCT = 10_000  # a target with more distinct values than this is no classification the base could share


def _refuse(msg: str, loc: list[Any] | None = None) -> InvalidParams:
    return InvalidParams(f"warm_start: {msg}", errors=[{"loc": loc or ["warm_start"], "msg": msg}])


def _label(value: Any) -> str:
    """A label as the pipeline would see it: 1, "1" and "1.0" are one label; True and "true" are one."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text.lower()
    return str(int(number)) if number.is_integer() else repr(number)


def _dataset_labels(dataset_id: str, target: str) -> set[str] | None:
    """The distinct non-empty values of the target column, or None when there are too many to be classes."""
    path = services().datasets.path(tenant(), dataset_id)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if target not in header:
            return set()
        column = header.index(target)
        labels: set[str] = set()
        for row in reader:
            if column < len(row) and row[column].strip():
                labels.add(_label(row[column]))
                if len(labels) > MAX_DISTINCT:
                    return None
    return labels


def check_warm_start(body: Any, columns: dict[str, Any]) -> dict[str, Any] | None:
    """The warm_start object for the TrainRequest ({"model", "version": number}), or None; InvalidParams on a
    mismatch. Fills params.hidden_layers in from the base version when the request leaves it out."""
    warm = getattr(body, "warm_start", None)
    if warm is None:
        return None
    if body.algorithm != "mlp":
        raise _refuse(
            f"only an mlp can continue from a version; this training's algorithm is {body.algorithm!r}", ["algorithm"]
        )
    registry = services().registry
    try:
        version = registry.resolve(tenant(), warm.model, warm.version)
    except ResourceNotFound as exc:
        raise _refuse(exc.message, ["warm_start", "version"]) from None
    manifest = registry.manifest(tenant(), warm.model, version)
    base = f"model {warm.model!r} version {version}"
    if manifest.get("algorithm") != "mlp":
        raise _refuse(f"{base} is a {manifest.get('algorithm')}, not an mlp; only mlp versions can be fine-tuned")
    if manifest.get("model_kind", "torch") != "torch":
        # An export (onnx, torchscript) or a quantized copy holds no trainable weights: the worker failed later
        # with a misleading "preprocessor.skops is missing".
        parent = manifest.get("parent")
        source = f"; warm start from version {parent}, which it was made from" if parent is not None else ""
        raise _refuse(
            f"{base} is a {manifest.get('model_kind')} copy, not a trainable mlp{source}", ["warm_start", "version"]
        )
    if body.task is not None and body.task != manifest.get("task"):
        raise _refuse(f"{base} does {manifest.get('task')}, this training asks for {body.task}", ["task"])
    wanted = body.features or [name for name in columns if name != body.target]
    base_features = [f["name"] for f in manifest.get("features", [])]
    if wanted != base_features:
        raise _refuse(
            f"the features must be those of {base}, in its order: {base_features}; got {wanted}", ["features"]
        )
    base_layers = (manifest.get("params") or {}).get("hidden_layers")
    given = body.params.get("hidden_layers")
    if given is None:
        body.params["hidden_layers"] = base_layers
    elif given != base_layers:
        raise _refuse(
            f"params.hidden_layers must be those of {base}: {base_layers}; got {given}", ["params", "hidden_layers"]
        )
    if manifest.get("task") == "classification":
        labels = _dataset_labels(body.dataset, body.target)
        base_labels = {_label(c) for c in manifest.get("classes") or []}
        if labels is not None and labels != base_labels:
            raise _refuse(
                f"the target's classes must be those of {base}: {sorted(base_labels)}; this dataset has "
                f"{sorted(labels)[:20]}",
                ["target"],
            )
    return {"model": warm.model, "version": version}
