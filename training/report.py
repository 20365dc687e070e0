"""What a training reports beyond its test metrics: per-class metrics and rare-class warnings, permutation
importance on the test split, and k-fold cross-validation when `split.cv` asks for it.

Kept apart from training/pipeline.py so the pipeline stays one readable prepare → fit → evaluate → register.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from training.cv import cross_validate
from training.data import PreparedData
from training.imbalance import per_class_metrics, rare_class_warnings
from training.importance import permutation_importance
from training.params import CLASSIFICATION


def further_report(
    model: Any,
    data: PreparedData,
    *,
    algorithm: str,
    params: dict[str, Any],
    seed: int,
    cv_folds: int | None,
    device: str,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """{"per_class"?, "warnings", "feature_importance", "cv"?}: every key is JSON, ready for the manifest."""
    x_test = np.asarray(data.preprocessor.transform(data.X_test), dtype=np.float32)
    out: dict[str, Any] = {"warnings": []}
    if data.task == CLASSIFICATION and data.classes is not None:
        out["per_class"] = per_class_metrics(data.y_test, model.predict(x_test), data.classes)
        y_all = np.concatenate([data.y_train, data.y_val, data.y_test])
        out["warnings"] = rare_class_warnings(y_all, data.classes)
    out["feature_importance"] = permutation_importance(
        model, data.preprocessor, data.X_test, data.y_test, data.task, seed=seed
    )
    if cv_folds:
        # Cross-validated on every non-test row: the test split stays unseen, as for the main fit.
        X = pd.concat([data.X_train, data.X_val], ignore_index=True)
        y = np.concatenate([data.y_train, data.y_val])

        def on_fold(i: int, k: int) -> None:
            if on_progress is not None:
                on_progress(fraction=None, message=f"cross-validation: fold {i}/{k} done")

        out["cv"] = cross_validate(
            X,
            y,
            task=data.task,
            n_classes=len(data.classes or []),
            algorithm=algorithm,
            params=params,
            preprocessor=data.preprocessor,
            folds=cv_folds,
            seed=seed,
            device=device,
            should_stop=should_stop,
            on_fold=on_fold,
        )
    return out
