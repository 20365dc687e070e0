"""A loaded model version that turns raw rows into post-processed predictions.

Loading goes registry → verified directory (checksums and HMAC checked) → preprocessor → model, so nothing is
deserialised from a file that does not match its manifest. A batch is one preprocessor call and one model call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.algorithms import Model, check_servable, load_model
from training.data import load_preprocessor
from training.errors import InvalidInput, InvalidParams, MLQError
from training.registry import ModelRegistry
from training.rows import frame_from_rows

CLASSIFICATION = "classification"
OUTPUTS = ("label", "proba", "both")
SORTS = ("desc", "asc", "none")
POSTPROCESS_KEYS = ("output", "top_k", "threshold", "sort")
PROBA_DIGITS = 6


def _bad(key: str, msg: str) -> InvalidParams:
    return InvalidParams(f"postprocess.{key} {msg}", errors=[{"loc": ["postprocess", key], "msg": msg}])


def check_postprocess(postprocess: dict[str, Any] | None, task: str, n_classes: int) -> dict[str, Any]:
    """The postprocess options with defaults filled in; InvalidParams naming the offending key otherwise."""
    if postprocess is None:
        postprocess = {}
    if not isinstance(postprocess, dict):
        raise InvalidParams(f"postprocess must be an object, got {type(postprocess).__name__}",
                            errors=[{"loc": ["postprocess"], "msg": "must be an object"}])
    unknown = sorted(k for k in postprocess if k not in POSTPROCESS_KEYS)
    if unknown:
        raise _bad(unknown[0], f"is not a known option; valid options: {', '.join(POSTPROCESS_KEYS)}")
    classification = task == CLASSIFICATION
    if not classification:
        # A regression prediction is one value: labels, probabilities and cut-offs have no meaning there.
        for key in ("output", "top_k", "threshold"):
            if key in postprocess:
                raise _bad(key, "applies to classification models only; this model does regression")
    out = {"output": postprocess.get("output", "both"), "top_k": postprocess.get("top_k"),
           "threshold": postprocess.get("threshold"), "sort": postprocess.get("sort", "none")}
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


def _key(label: Any) -> str:
    # JSON object keys are strings; write them the way JSON writes the label (1 → "1", True → "true") so a
    # result reads the same before and after it crosses the queue.
    return label if isinstance(label, str) else json.dumps(label)


class Predictor:
    """One model version, loaded and verified, ready to predict batches of raw rows."""

    def __init__(self, *, tenant: str, name: str, version: int, manifest: dict[str, Any], preprocessor: Any,
                 model: Model) -> None:
        self.tenant = tenant
        self.name = name
        self.version = version
        self.manifest = manifest
        self.preprocessor = preprocessor
        self.model = model
        self.task: str = manifest["task"]
        self.classes: list[Any] | None = manifest.get("classes")
        self.features: list[str] = [f["name"] for f in manifest["features"]]
        self.feature_dtypes: dict[str, str] = {f["name"]: f["dtype"] for f in manifest["features"]}

    @classmethod
    def load(cls, registry: ModelRegistry, tenant: str, name: str, ref: str | int | None = None,
             device: str = "cpu") -> Predictor:
        """Resolve `ref` (version, alias, or None for production/latest), verify the files, then load them."""
        version = registry.resolve(tenant, name, ref)
        directory = registry.verified_dir(tenant, name, version)
        manifest = registry.manifest(tenant, name, version)
        missing = [k for k in ("task", "features", "model_kind") if k not in manifest]
        if missing:
            raise MLQError(f"model {name!r} version {version} has no {', '.join(missing)} in its manifest; "
                           "it was not registered by the training pipeline and cannot serve predictions")
        check_servable(manifest["model_kind"])
        if manifest["task"] == CLASSIFICATION and not manifest.get("classes"):
            raise MLQError(f"model {name!r} version {version} is a classifier without classes in its manifest")
        pre_file = manifest.get("preprocessor_file", "preprocessor.skops")
        if pre_file not in manifest.get("files", {}):  # only a file whose checksum was just verified is read
            raise MLQError(f"model {name!r} version {version}: preprocessor file {pre_file!r} is not in the "
                           "artifact; re-train the model")
        preprocessor = load_preprocessor(Path(directory) / pre_file)
        model = load_model(Path(directory), manifest["model_kind"], device)
        return cls(tenant=tenant, name=name, version=version, manifest=manifest, preprocessor=preprocessor,
                   model=model)

    def predict(self, rows: list[Any], postprocess: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Predictions for `rows` (dicts keyed by feature, or lists in feature order), post-processed."""
        n_classes = len(self.classes) if self.classes else 0
        options = check_postprocess(postprocess, self.task, n_classes)
        return self.postprocess(self.scores(rows), options)

    def scores(self, rows: list[Any]) -> np.ndarray:
        """Class probabilities (n, K) or regression values (n,): one frame, one transform, one model call.

        The inference worker calls this once for the rows of many requests, then `postprocess` per request.
        """
        frame = frame_from_rows(rows, self.features, self.feature_dtypes)
        if len(frame) == 0:
            return np.zeros((0, len(self.classes)) if self.task == CLASSIFICATION and self.classes else (0,))
        try:
            X = np.asarray(self.preprocessor.transform(frame), dtype=np.float32)
        except (ValueError, TypeError) as exc:  # frame_from_rows catches row errors; this is the last guard
            raise InvalidInput(f"the inputs could not be preprocessed: {exc}") from exc
        if self.task != CLASSIFICATION:
            return np.asarray(self.model.predict(X), dtype=np.float64)
        assert self.classes is not None
        proba = self.model.predict_proba(X)
        if proba is None:  # a classifier without probabilities: its label gets probability 1
            proba = np.eye(len(self.classes))[np.asarray(self.model.predict(X), dtype=np.int64)]
        return np.asarray(proba, dtype=np.float64)

    def postprocess(self, scores: np.ndarray, options: dict[str, Any]) -> list[dict[str, Any]]:
        """Predictions from `scores` (as `scores` returns them) and checked options (see check_postprocess):
        labels, top_k, threshold and sort; "row" is the index within `scores`."""
        if self.task == CLASSIFICATION:
            predictions, score = self._classify(scores, options)
        else:
            predictions = [{"row": i, "value": float(v)} for i, v in enumerate(scores)]
            score = scores
        if options["sort"] != "none":
            # Python's sort stays stable with reverse=True: equal scores keep their input order either way.
            predictions.sort(key=lambda p: float(score[p["row"]]), reverse=options["sort"] == "desc")
        return predictions

    def _classify(self, proba: np.ndarray, options: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray]:
        assert self.classes is not None
        top = proba.max(axis=1) if len(proba) else np.zeros((0,))
        # Most probable first; ties keep class order. The first column is the predicted label.
        order = np.argsort(-proba, axis=1, kind="stable")
        keep = order[:, : options["top_k"] or len(self.classes)]
        labels = self.classes
        keys = [_key(c) for c in labels]
        rounded = np.round(proba, PROBA_DIGITS)
        threshold = options["threshold"]
        out: list[dict[str, Any]] = []
        for i in range(len(proba)):
            if threshold is not None and top[i] < threshold:
                continue
            item: dict[str, Any] = {"row": i}
            if options["output"] != "proba":
                item["label"] = labels[int(order[i, 0])]
            if options["output"] != "label":
                item["proba"] = {keys[j]: float(rounded[i, j]) for j in keep[i]}
            out.append(item)
        return out, top
