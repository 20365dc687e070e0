"""Which features matter: permutation importance on the held-out test split, per raw feature column.

Each raw column (not each one-hot column) is shuffled in turn, the rows go through the fitted preprocessor and
the model again, and the importance is how much the score drops (accuracy for classification, R² for
regression). A column the model ignores drops nothing; pure noise stays near 0. Done by hand rather than with
scikit-learn's `permutation_importance` because our models are not scikit-learn estimators and the preprocessor
sits between the raw columns and the model.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from training.params import CLASSIFICATION

DEFAULT_REPEATS = 5
TOP_FEATURES = 20  # the manifest keeps this many, most important first
MAX_ROWS = 1000  # test rows used at most (a random sample): enough to rank features
# Scoring costs features × repeats × rows forward passes: on a wide network (256 features, 2048-unit layers) the
# full 5 repeats took minutes, longer than the training. Within this many seconds (estimated from the baseline
# pass) repeats, then rows, are reduced; the result says how many of each it used.
BUDGET_S = 10.0
MIN_ROWS = 50


def _score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if task == CLASSIFICATION:
        return float(skm.accuracy_score(y_true, y_pred))
    return float(skm.r2_score(y_true, y_pred)) if len(y_true) >= 2 else 0.0


def column_groups(preprocessor: Any, features: list[str]) -> dict[str, list[int]] | None:
    """The transformed columns each raw feature becomes (one for a number, one per category for a one-hot), read
    from a fitted ColumnTransformer; None for any other preprocessor (then raw columns are shuffled instead)."""
    groups: dict[str, list[int]] = {f: [] for f in features}
    try:
        for name, pipe, columns in preprocessor.transformers_:
            if name == "remainder" or pipe == "drop":
                continue
            part = preprocessor.output_indices_[name]
            last = pipe.steps[-1][1] if hasattr(pipe, "steps") else pipe
            encoder = next((step for _, step in getattr(pipe, "steps", [])[::-1] if hasattr(step, "categories_")), last)
            widths = [len(c) for c in encoder.categories_] if hasattr(encoder, "categories_") else [1] * len(columns)
            if len(widths) != len(columns) or sum(widths) != part.stop - part.start:
                return None  # an encoder that drops or merges categories: no simple mapping
            start = part.start
            for column, width in zip(columns, widths, strict=True):
                groups[column].extend(range(start, start + width))
                start += width
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return groups if all(groups.values()) else None


def permutation_importance(
    model: Any,
    preprocessor: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    task: str,
    *,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
    top: int = TOP_FEATURES,
) -> dict[str, Any]:
    """{"method", "metric", "repeats", "baseline", "features": [{"name", "importance", "std"}]}, best first.

    The preprocessing works row by row once fitted, so shuffling a raw column equals shuffling the transformed
    columns it became: the rows are transformed once, and each feature's `repeats` shuffles go to the model as
    one stacked batch (one predict call per feature, not per shuffle).
    """
    rng = np.random.default_rng(seed)
    if len(X) > MAX_ROWS:
        keep = np.sort(rng.choice(len(X), MAX_ROWS, replace=False))
        X, y = X.iloc[keep], np.asarray(y)[keep]
    n = len(X)
    X_t = np.asarray(preprocessor.transform(X), dtype=np.float32)
    started = time.perf_counter()
    baseline = _score(task, y, model.predict(X_t))
    affordable_rows = BUDGET_S / max((time.perf_counter() - started) / max(n, 1), 1e-9)
    per_feature = affordable_rows / max(len(X.columns), 1)
    repeats = int(min(repeats, per_feature // max(n, 1)))
    if repeats < 1:  # not even one pass over every row: fewer rows, one repeat
        if per_feature < MIN_ROWS:
            return {
                "method": "permutation",
                "split": "test",
                "skipped": f"too costly for this model: under {MIN_ROWS} rows per feature fit in {BUDGET_S:.0f} s",
                "features": [],
            }
        keep = np.sort(rng.choice(n, int(per_feature), replace=False))
        X, y, X_t = X.iloc[keep], np.asarray(y)[keep], X_t[keep]
        n, repeats = len(X), 1
        baseline = _score(task, y, model.predict(X_t))
    groups = column_groups(preprocessor, [str(c) for c in X.columns])
    found: list[dict[str, Any]] = []
    for name in X.columns:
        if groups is not None:
            stacked = np.tile(X_t, (repeats, 1))
            for r in range(repeats):
                block = stacked[r * n : (r + 1) * n]
                block[:, groups[str(name)]] = X_t[rng.permutation(n)][:, groups[str(name)]]
        else:
            copies = []
            for _ in range(repeats):
                shuffled = X.copy()
                shuffled[name] = X[name].to_numpy()[rng.permutation(n)]
                copies.append(shuffled)
            stacked = np.asarray(preprocessor.transform(pd.concat(copies, ignore_index=True)), dtype=np.float32)
        predicted = model.predict(stacked)
        drops = [baseline - _score(task, y, predicted[r * n : (r + 1) * n]) for r in range(repeats)]
        found.append(
            {"name": str(name), "importance": round(float(np.mean(drops)), 6), "std": round(float(np.std(drops)), 6)}
        )
    found.sort(key=lambda f: -float(f["importance"]))
    return {
        "method": "permutation",
        "split": "test",
        "metric": "accuracy" if task == CLASSIFICATION else "r2",
        "repeats": repeats,
        "rows": n,
        "baseline": round(baseline, 6),
        "features": found[:top],
    }
