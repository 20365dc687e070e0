"""A loaded model version that turns raw rows into post-processed predictions.

Loading goes registry → verified directory (checksums and HMAC checked) → preprocessor → model, so nothing is
deserialised from a file that does not match its manifest. A batch is one preprocessor call and one model call.
The preprocessor is compiled at load time into numpy operations on the raw rows (training/compiled.py); one that
cannot be compiled is served by the ColumnTransformer itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.algorithms import Model, check_servable
from training.compiled import compile_preprocessor
from training.data import load_preprocessor
from training.errors import InvalidInput, MLQError
from training.loading import load_model
from training.manifest import ModelManifest
from training.postprocess import CLASSIFICATION, check_postprocess
from training.registry import ModelRegistry
from training.rows import frame_from_rows

PROBA_DIGITS = 6


def _value(v: Any) -> float:
    # Models fed float32 features (the MLP; scikit-learn's linear models keep the input's dtype) predict float32,
    # and widened to float64 those read 210.283203125. A value that float32 holds exactly is written as float32's
    # shortest repr (210.2832), which is what the model computed; any other value is a real float64 and stays.
    single = np.float32(v)
    return float(str(single)) if float(single) == float(v) else float(v)


def _key(label: Any) -> str:
    # JSON object keys are strings; write them the way JSON writes the label (1 → "1", True → "true") so a
    # result reads the same before and after it crosses the queue.
    return label if isinstance(label, str) else json.dumps(label)


class Predictor:
    """One model version, loaded and verified, ready to predict batches of raw rows."""

    def __init__(
        self, *, tenant: str, name: str, version: int, manifest: ModelManifest, preprocessor: Any, model: Model
    ) -> None:
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
        # ~1 ms of pandas and input validation per call become ~10 µs of numpy; None: not compilable.
        self.compiled = compile_preprocessor(preprocessor, self.features, self.feature_dtypes)

    @classmethod
    def load(
        cls, registry: ModelRegistry, tenant: str, name: str, ref: str | int | None = None, device: str = "cpu"
    ) -> Predictor:
        """Resolve `ref` (version, alias, or None for production/latest), verify the files, then load them."""
        version = registry.resolve(tenant, name, ref)
        directory = registry.verified_dir(tenant, name, version)
        manifest = registry.manifest(tenant, name, version)
        missing = [k for k in ("task", "features", "model_kind") if k not in manifest]
        if missing:
            raise MLQError(
                f"model {name!r} version {version} has no {', '.join(missing)} in its manifest; "
                "it was not registered by the training pipeline and cannot serve predictions"
            )
        check_servable(manifest["model_kind"])
        if manifest["task"] == CLASSIFICATION and not manifest.get("classes"):
            raise MLQError(f"model {name!r} version {version} is a classifier without classes in its manifest")
        pre_file = manifest.get("preprocessor_file", "preprocessor.skops")
        if pre_file not in manifest.get("files", {}):  # only a file whose checksum was just verified is read
            raise MLQError(
                f"model {name!r} version {version}: preprocessor file {pre_file!r} is not in the "
                "artifact; re-train the model"
            )
        preprocessor = load_preprocessor(Path(directory) / pre_file)
        model = load_model(Path(directory), manifest["model_kind"], device)
        return cls(tenant=tenant, name=name, version=version, manifest=manifest, preprocessor=preprocessor, model=model)

    def predict(self, rows: list[Any], postprocess: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Predictions for `rows` (dicts keyed by feature, or lists in feature order), post-processed."""
        n_classes = len(self.classes) if self.classes else 0
        options = check_postprocess(postprocess, self.task, n_classes)
        return self.postprocess(self.scores(rows), options)

    def scores(self, rows: list[Any]) -> np.ndarray:
        """Class probabilities (n, K) or regression values (n,): one frame, one transform, one model call.

        The inference worker calls this once for the rows of many requests, then `postprocess` per request.
        """
        X = self.preprocess(rows)
        if len(X) == 0:
            return np.zeros((0, len(self.classes)) if self.task == CLASSIFICATION and self.classes else (0,))
        if self.task != CLASSIFICATION:
            return np.asarray(self.model.predict(X), dtype=np.float64)
        assert self.classes is not None
        proba = self.model.predict_proba(X)
        if proba is None:  # a classifier without probabilities: its label gets probability 1
            proba = np.eye(len(self.classes))[np.asarray(self.model.predict(X), dtype=np.int64)]
        return np.asarray(proba, dtype=np.float64)

    def preprocess(self, rows: list[Any]) -> np.ndarray:
        """Raw rows → the model's float32 input; bad rows raise InvalidInput naming row and column."""
        if self.compiled is not None:
            return self.compiled.transform(rows)
        frame = frame_from_rows(rows, self.features, self.feature_dtypes)
        if len(frame) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            return np.asarray(self.preprocessor.transform(frame), dtype=np.float32)
        except (ValueError, TypeError) as exc:  # frame_from_rows catches row errors; this is the last guard
            raise InvalidInput(f"the inputs could not be preprocessed: {exc}") from exc

    def postprocess(self, scores: np.ndarray, options: dict[str, Any]) -> list[dict[str, Any]]:
        """Predictions from `scores` (as `scores` returns them) and checked options (see check_postprocess):
        labels, top_k, threshold and sort; "row" is the index within `scores`."""
        if self.task == CLASSIFICATION:
            predictions, score = self._classify(scores, options)
        else:
            predictions = [{"row": i, "value": _value(v)} for i, v in enumerate(scores)]
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
