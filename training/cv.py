"""k-fold cross-validation on the training rows: the mean and spread of each metric over k fits.

A single test split gives one number whose noise nobody sees; k folds give a mean and a standard deviation, and a
search ranks trials by the mean. Folds are stratified for classification (each fold keeps the class shares) and
shuffled with the split's seed, so they are reproducible. The preprocessor is cloned and fitted on each fold's
training part only: a fold's held-out rows never leak into the scaling or the imputation it is scored with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold

from training.algorithms import FitHooks, build_model
from training.errors import DataError, InvalidParams
from training.metrics import classification_metrics, regression_metrics
from training.params import CLASSIFICATION

MAX_FOLDS = 20


def check_folds(value: Any) -> int | None:
    """split.cv: None (no cross-validation) or an integer from 2 to MAX_FOLDS."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_FOLDS:
        raise InvalidParams(
            f"split.cv must be an integer from 2 to {MAX_FOLDS} (the number of folds), got {value!r}",
            errors=[{"loc": ["split", "cv"], "msg": f"must be an integer from 2 to {MAX_FOLDS}"}],
        )
    return value


def fold_indices(y: np.ndarray, task: str, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) of each fold; stratified for classification."""
    if task == CLASSIFICATION:
        smallest = int(np.bincount(np.asarray(y, dtype=np.int64)).min(initial=len(y)))
        if smallest < folds:
            raise DataError(
                f"split.cv={folds} needs at least {folds} training rows of every class, but one class "
                f"has {smallest}; use fewer folds or more rows",
                errors=[{"loc": ["split", "cv"], "msg": f"a class has only {smallest} training rows"}],
            )
        splitter: Any = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def _scalars(metrics: dict[str, Any]) -> dict[str, float | None]:
    return {k: v for k, v in metrics.items() if v is None or isinstance(v, int | float)}


def cross_validate(
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    task: str,
    n_classes: int,
    algorithm: str,
    params: dict[str, Any],
    preprocessor: Any,
    folds: int,
    seed: int,
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """{"folds", "mean": {metric: …}, "std": {metric: …}, "per_fold": [{metric: …}]} over k fresh fits.

    `params` must be validated; `preprocessor` is an unfitted-or-fitted template (it is cloned per fold).
    """
    per_fold: list[dict[str, float | None]] = []
    y = np.asarray(y)
    for i, (train, held_out) in enumerate(fold_indices(y, task, folds, seed), start=1):
        pre = clone(preprocessor).fit(X.iloc[train])
        x_train = np.asarray(pre.transform(X.iloc[train]), dtype=np.float32)
        x_held = np.asarray(pre.transform(X.iloc[held_out]), dtype=np.float32)
        model = build_model(algorithm, task, params, x_train.shape[1], n_classes)
        # No validation rows and no checkpoint: a fold is short, and the job's checkpoint belongs to its main fit.
        empty = np.empty((0, x_train.shape[1]), dtype=np.float32)
        model.fit(x_train, y[train], empty, y[train][:0], FitHooks(should_stop=should_stop, device=device))
        if task == CLASSIFICATION:
            metrics = classification_metrics(y[held_out], model.predict(x_held), model.predict_proba(x_held), n_classes)
        else:
            metrics = regression_metrics(y[held_out], model.predict(x_held))
        per_fold.append(_scalars(metrics))
        if on_fold is not None:
            on_fold(i, folds)
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for name in per_fold[0]:
        values = [f[name] for f in per_fold]
        present = [float(v) for v in values if v is not None]
        # A metric undefined in any fold (ROC AUC with a class missing) has no honest mean.
        mean[name] = round(float(np.mean(present)), 6) if len(present) == len(values) else None
        std[name] = round(float(np.std(present)), 6) if len(present) == len(values) else None
    return {"folds": folds, "seed": seed, "mean": mean, "std": std, "per_fold": per_fold}
