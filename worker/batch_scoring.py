"""The numbers of one inference batch: one preprocessing call and one forward pass for many requests' rows,
then each request's own post-processing of its slice of the scores.

Pure functions of a `Predictor` and numpy arrays, with no Redis and no threads, so they are kept apart from the
stream consumer of worker/inference.py; they must give exactly what `Predictor.predict` gives for the same rows
and options (tests/integration/test_batching.py compares the two).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from training.predictor import CLASSIFICATION, PROBA_DIGITS, Predictor
from training.rows import frame_from_rows


def _label_key(label: Any) -> str:
    # As Predictor writes proba keys: the label as JSON writes it (1 → "1", True → "true").
    return label if isinstance(label, str) else orjson.dumps(label).decode()


def postprocess(predictor: Predictor, scores: np.ndarray, options: dict[str, Any]) -> list[dict[str, Any]]:
    """One request's predictions from its slice of the batch's scores (probabilities or values), exactly as
    Predictor.predict post-processes them (labels, top_k, threshold, sort; "row" is the request's own index)."""
    if predictor.task == CLASSIFICATION:
        classes = predictor.classes or []
        proba = scores
        top = proba.max(axis=1)
        order = np.argsort(-proba, axis=1, kind="stable")
        keep = order[:, : options["top_k"] or len(classes)]
        keys = [_label_key(c) for c in classes]
        rounded = np.round(proba, PROBA_DIGITS)
        threshold = options["threshold"]
        predictions: list[dict[str, Any]] = []
        for i in range(len(proba)):
            if threshold is not None and top[i] < threshold:
                continue
            item: dict[str, Any] = {"row": i}
            if options["output"] != "proba":
                item["label"] = classes[int(order[i, 0])]
            if options["output"] != "label":
                item["proba"] = {keys[j]: float(rounded[i, j]) for j in keep[i]}
            predictions.append(item)
        score = top
    else:
        predictions = [{"row": i, "value": float(v)} for i, v in enumerate(scores)]
        score = scores
    if options["sort"] != "none":
        predictions.sort(key=lambda p: float(score[p["row"]]), reverse=options["sort"] == "desc")
    return predictions


def scores_for(predictor: Predictor, rows: list[Any]) -> np.ndarray:
    """Class probabilities (n, K) or regression values (n,) for `rows`: one frame, one transform, one forward."""
    frame = frame_from_rows(rows, predictor.features, predictor.feature_dtypes)
    X = np.asarray(predictor.preprocessor.transform(frame), dtype=np.float32)
    if predictor.task == CLASSIFICATION:
        proba = predictor.model.predict_proba(X)
        if proba is None:  # a classifier without probabilities: its label gets probability 1
            proba = np.eye(len(predictor.classes or []))[np.asarray(predictor.model.predict(X), dtype=np.int64)]
        return np.asarray(proba, dtype=np.float64)
    return np.asarray(predictor.model.predict(X), dtype=np.float64)
