"""Evaluation metrics for a fitted model, as plain JSON-ready Python values (floats rounded to 6 digits).

A metric that cannot be computed (ROC AUC without probabilities or with a class missing from y_true, R² of one
sample) is None rather than NaN, because NaN is not JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm

from training.errors import DataError


def _number(value: Any) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _check_lengths(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if len(y_true) == 0:
        raise DataError("cannot compute metrics on zero rows; the test split is empty")
    if len(y_true) != len(y_pred):
        raise DataError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")


def _roc_auc(y_true: np.ndarray, proba: np.ndarray | None, n_classes: int) -> float | None:
    if proba is None or n_classes < 2:
        return None
    proba = np.asarray(proba, dtype=np.float64)
    # With a class absent from y_true its one-vs-rest AUC is undefined; report none rather than a partial mean.
    if set(np.unique(y_true).tolist()) != set(range(n_classes)) or not np.isfinite(proba).all():
        return None
    try:
        if n_classes == 2:
            return _number(skm.roc_auc_score(y_true, proba[:, 1]))
        return _number(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=list(range(n_classes))))
    except ValueError:  # e.g. probabilities that do not sum to 1 across classes
        return None


def classification_metrics(y_true: Any, y_pred: Any, proba: np.ndarray | None, n_classes: int) -> dict[str, Any]:
    """accuracy, macro precision/recall/f1, one-vs-rest ROC AUC (or None) and the confusion matrix.

    y_true and y_pred are class codes 0..n_classes-1; proba is (n, n_classes) or None. The confusion matrix is
    n_classes × n_classes, rows = true class, columns = predicted class, in code order.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    _check_lengths(y_true, y_pred)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    matrix = skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
    return {
        "accuracy": _number(skm.accuracy_score(y_true, y_pred)),
        "precision": _number(precision),
        "recall": _number(recall),
        "f1": _number(f1),
        "roc_auc": _roc_auc(y_true, proba, n_classes),
        "confusion_matrix": [[int(v) for v in row] for row in matrix],
    }


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float | None]:
    """Root mean squared error, mean absolute error and R² (None when undefined, e.g. fewer than 2 rows)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    _check_lengths(y_true, y_pred)
    r2 = skm.r2_score(y_true, y_pred) if len(y_true) >= 2 else math.nan
    return {
        "rmse": _number(math.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": _number(skm.mean_absolute_error(y_true, y_pred)),
        "r2": _number(r2),
    }
