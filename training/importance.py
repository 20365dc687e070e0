"""Which features matter: permutation importance on the held-out test split, per raw feature column.

Each raw column (not each one-hot column) is shuffled in turn, the rows go through the fitted preprocessor and
the model again, and the importance is how much the score drops (accuracy for classification, R² for
regression). A column the model ignores drops nothing; pure noise stays near 0. Done by hand rather than with
scikit-learn's `permutation_importance` because our models are not scikit-learn estimators and the preprocessor
sits between the raw columns and the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from training.params import CLASSIFICATION

DEFAULT_REPEATS = 5
TOP_FEATURES = 20  # the manifest keeps this many, most important first


def _score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if task == CLASSIFICATION:
        return float(skm.accuracy_score(y_true, y_pred))
    return float(skm.r2_score(y_true, y_pred)) if len(y_true) >= 2 else 0.0


def permutation_importance(model: Any, preprocessor: Any, X: pd.DataFrame, y: np.ndarray, task: str, *,
                           repeats: int = DEFAULT_REPEATS, seed: int = 0, top: int = TOP_FEATURES) -> dict[str, Any]:
    """{"method", "metric", "repeats", "baseline", "features": [{"name", "importance", "std"}]}, best first."""

    def score(frame: pd.DataFrame) -> float:
        return _score(task, y, model.predict(np.asarray(preprocessor.transform(frame), dtype=np.float32)))

    rng = np.random.default_rng(seed)
    baseline = score(X)
    found: list[dict[str, Any]] = []
    for name in X.columns:
        drops = []
        for _ in range(repeats):
            shuffled = X.copy()
            shuffled[name] = X[name].to_numpy()[rng.permutation(len(X))]
            drops.append(baseline - score(shuffled))
        found.append({"name": str(name), "importance": round(float(np.mean(drops)), 6),
                      "std": round(float(np.std(drops)), 6)})
    found.sort(key=lambda f: -f["importance"])
    return {"method": "permutation", "split": "test", "metric": "accuracy" if task == CLASSIFICATION else "r2",
            "repeats": repeats, "baseline": round(baseline, 6), "features": found[:top]}
