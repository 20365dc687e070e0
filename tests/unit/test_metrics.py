"""training.metrics on real fits of sklearn's bundled datasets, plus hand-checked small cases."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.errors import DataError
from training.metrics import classification_metrics, regression_metrics


def fit_classifier(loader: Callable[..., Any]) -> tuple[Any, Any, Any]:
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X_train, y_train)
    return y_test, model.predict(X_test), model.predict_proba(X_test)


def test_iris_metrics_are_plain_json_values_with_a_full_confusion_matrix() -> None:
    y_true, y_pred, proba = fit_classifier(load_iris)
    result = classification_metrics(y_true, y_pred, proba, 3)
    assert set(result) == {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"}
    assert result["accuracy"] > 0.85 and result["roc_auc"] > 0.9
    assert all(type(result[k]) is float for k in ("accuracy", "precision", "recall", "f1", "roc_auc"))
    matrix = result["confusion_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 and all(type(v) is int for v in row) for row in matrix)
    assert sum(map(sum, matrix)) == len(y_true)
    assert sum(matrix[i][i] for i in range(3)) / len(y_true) == pytest.approx(result["accuracy"], abs=1e-6)
    json.dumps(result, allow_nan=False)


def test_binary_roc_auc_uses_the_positive_class_column() -> None:
    y_true, y_pred, proba = fit_classifier(load_breast_cancer)
    result = classification_metrics(y_true, y_pred, proba, 2)
    assert result["roc_auc"] > 0.95
    flipped = classification_metrics(y_true, y_pred, proba[:, ::-1], 2)
    assert flipped["roc_auc"] == pytest.approx(1 - result["roc_auc"], abs=1e-6)


def test_macro_averages_match_a_hand_computed_case() -> None:
    # class 0: precision 1/2, recall 1; class 1: precision 1, recall 1/2 → both macro means 0.75
    result = classification_metrics([0, 1, 1], [0, 0, 1], None, 2)
    assert result["accuracy"] == pytest.approx(0.666667)
    assert (result["precision"], result["recall"]) == (0.75, 0.75)
    assert result["f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert result["confusion_matrix"] == [[1, 0], [1, 1]]


def test_roc_auc_is_none_without_probabilities_or_with_a_class_absent() -> None:
    assert classification_metrics([0, 1, 2], [0, 1, 2], None, 3)["roc_auc"] is None
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1]])
    result = classification_metrics([0, 1, 0], [0, 1, 0], proba, 3)
    assert result["roc_auc"] is None
    assert result["confusion_matrix"][2] == [0, 0, 0]  # the absent class still has its row


def test_a_class_never_predicted_scores_zero_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = classification_metrics([0, 1, 1, 0], [0, 0, 0, 0], None, 2)
    assert result["precision"] == 0.25  # class 0: 2/4, class 1: 0 by zero_division


def test_diabetes_regression_metrics_agree_with_their_definitions() -> None:
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    pred = LinearRegression().fit(X_train, y_train).predict(X_test)
    result = regression_metrics(y_test, pred)
    assert set(result) == {"rmse", "mae", "r2"}
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((y_test - pred) ** 2)), abs=1e-5)
    assert result["mae"] == pytest.approx(np.mean(np.abs(y_test - pred)), abs=1e-5)
    r2 = result["r2"]
    assert r2 is not None and 0.2 < r2 < 0.8
    assert all(type(v) is float for v in result.values())


def test_values_are_rounded_to_six_digits() -> None:
    result = regression_metrics([0.0, 1.0, 2.0], [0.1234567891, 1.0, 2.0])
    assert result["mae"] == round(0.1234567891 / 3, 6)


def test_r2_of_a_single_row_is_none_rather_than_nan() -> None:
    assert regression_metrics([1.0], [2.0]) == {"rmse": 1.0, "mae": 1.0, "r2": None}


def test_empty_or_mismatched_inputs_are_refused() -> None:
    with pytest.raises(DataError, match="zero rows"):
        regression_metrics([], [])
    with pytest.raises(DataError, match="3 rows but y_pred has 2"):
        classification_metrics([0, 1, 0], [0, 1], None, 2)
