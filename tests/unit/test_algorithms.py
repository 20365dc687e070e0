"""The algorithm registry: every algorithm trains, reports progress, saves and loads back to the same predictions."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from training.algorithms import (
    ALGORITHMS,
    ARCHITECTURE_FILE,
    SKOPS_FILE,
    FitHooks,
    Model,
    SklearnModel,
    build_model,
)
from training.errors import ArtifactTampered, Cancelled, InvalidParams, MLQError, UnknownAlgorithm
from training.loading import load_model
from training.params import ALGORITHM_NAMES, ALGORITHM_TASKS, CLASSIFICATION, REGRESSION, validate_params

# Small settings so the whole file stays fast on a shared two-core machine.
FAST: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 25},
    "gradient_boosting": {"n_estimators": 25},
    "mlp": {"hidden_layers": [32], "epochs": 40, "lr": 0.01, "batch_size": 32, "early_stopping_patience": 10},
}
# Diabetes is hard for trees this small (r2 ~0.2-0.3 on this split); linear models and the MLP reach ~0.4.
MIN_R2 = {"random_forest": 0.15, "gradient_boosting": 0.15}


@dataclass(frozen=True)
class Split:
    """Train / validation / test arrays, features scaled on the train part, as the pipeline will hand them over."""

    X_tr: np.ndarray
    y_tr: np.ndarray
    X_va: np.ndarray
    y_va: np.ndarray
    X_te: np.ndarray
    y_te: np.ndarray

    def fit_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.X_tr, self.y_tr, self.X_va, self.y_va


def split(loader: Callable[..., Any], classification: bool) -> Split:
    X, y = loader(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y if classification else None
    )
    X_tr, X_va, y_tr, y_va = train_test_split(
        X_tr, y_tr, test_size=0.15, random_state=0, stratify=y_tr if classification else None
    )
    scaler = StandardScaler().fit(X_tr)
    scaled = [scaler.transform(a).astype(np.float32) for a in (X_tr, X_va, X_te)]
    return Split(scaled[0], y_tr, scaled[1], y_va, scaled[2], y_te)


def proba_of(model: Model, X: np.ndarray) -> np.ndarray:
    proba = model.predict_proba(X)
    assert proba is not None
    return proba


@pytest.fixture(scope="module")
def iris() -> Split:
    return split(load_iris, classification=True)


@pytest.fixture(scope="module")
def diabetes() -> Split:
    return split(load_diabetes, classification=False)


def fit(algorithm: str, task: str, data: Split, n_classes: int, **hooks: Any) -> tuple[Model, int]:
    params = validate_params(algorithm, FAST.get(algorithm, {}), task)
    model = build_model(algorithm, task, params, data.X_tr.shape[1], n_classes)
    epochs = model.fit(*data.fit_args(), FitHooks(device="cpu", **hooks))
    return model, epochs


def test_the_registry_has_exactly_the_algorithms_of_the_param_schemas() -> None:
    assert tuple(ALGORITHMS) == ALGORITHM_NAMES
    assert all(ALGORITHMS[name].name == name for name in ALGORITHMS)
    assert {name: a.tasks for name, a in ALGORITHMS.items()} == ALGORITHM_TASKS


@pytest.mark.parametrize("algorithm,task", [(a, t) for a in ALGORITHM_NAMES for t in ALGORITHM_TASKS[a]])
def test_every_algorithm_builds_a_model_from_its_schema_defaults(algorithm: str, task: str) -> None:
    model = build_model(algorithm, task, validate_params(algorithm, {}, task), 5, 3)
    assert model.kind == ("torch" if algorithm == "mlp" else "sklearn")


def test_an_unknown_algorithm_or_a_task_it_cannot_do_is_refused() -> None:
    with pytest.raises(UnknownAlgorithm, match="valid algorithms: logistic_regression"):
        build_model("svm", CLASSIFICATION, {}, 4, 3)
    with pytest.raises(InvalidParams, match="does not do classification"):
        build_model("ridge", CLASSIFICATION, validate_params("ridge", {}), 4, 3)


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHM_NAMES if CLASSIFICATION in ALGORITHM_TASKS[a]])
def test_each_classifier_learns_iris_and_loads_back_to_identical_predictions(
    algorithm: str, iris: Split, tmp_path: Path
) -> None:
    progress: list[dict[str, Any]] = []
    model, epochs = fit(algorithm, CLASSIFICATION, iris, 3, on_progress=lambda **kw: progress.append(kw))
    X_te, y_te = iris.X_te, iris.y_te
    pred, proba = model.predict(X_te), proba_of(model, X_te)
    assert pred.dtype == np.int64 and accuracy_score(y_te, pred) > 0.85
    assert proba.shape == (len(X_te), 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert [p["epoch"] for p in progress] == list(range(1, epochs + 1))
    assert all(np.isfinite(p["loss"]) for p in progress)

    model.save(tmp_path)
    loaded = load_model(tmp_path, model.kind)
    assert np.array_equal(loaded.predict(X_te), pred)
    assert np.array_equal(proba_of(loaded, X_te), proba)


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHM_NAMES if REGRESSION in ALGORITHM_TASKS[a]])
def test_each_regressor_learns_diabetes_and_loads_back_to_identical_predictions(
    algorithm: str, diabetes: Split, tmp_path: Path
) -> None:
    model, _ = fit(algorithm, REGRESSION, diabetes, 0)
    X_te, y_te = diabetes.X_te, diabetes.y_te
    pred = model.predict(X_te)
    assert pred.dtype == np.float64 and r2_score(y_te, pred) > MIN_R2.get(algorithm, 0.3)
    # On the target's own scale (diabetes progression is ~25..346), not the standardized one the MLP trains on.
    assert 100 < pred.mean() < 200
    assert model.predict_proba(X_te) is None

    model.save(tmp_path)
    loaded = load_model(tmp_path, model.kind)
    assert np.array_equal(loaded.predict(X_te), pred)


@pytest.mark.parametrize("algorithm", ["gradient_boosting", "mlp"])
def test_a_binary_classifier_gives_two_probability_columns_after_a_round_trip(algorithm: str, tmp_path: Path) -> None:
    data = split(load_breast_cancer, classification=True)
    model, _ = fit(algorithm, CLASSIFICATION, data, 2)
    assert accuracy_score(data.y_te, model.predict(data.X_te)) > 0.85
    model.save(tmp_path)
    proba = proba_of(load_model(tmp_path, model.kind), data.X_te)
    assert proba.shape == (len(data.X_te), 2)
    assert np.array_equal(proba, proba_of(model, data.X_te))


def test_the_sklearn_fit_reports_one_epoch_with_a_training_loss(iris: Split) -> None:
    progress: list[dict[str, Any]] = []
    _, epochs = fit("logistic_regression", CLASSIFICATION, iris, 3, on_progress=lambda **kw: progress.append(kw))
    assert epochs == 1
    assert len(progress) == 1
    assert progress[0]["epoch"] == 1 and progress[0]["epochs"] == 1 and progress[0]["val_loss"] is None
    assert 0.0 < progress[0]["loss"] < 1.0  # log loss of a good iris fit


def test_a_cancel_before_a_sklearn_fit_raises_cancelled_and_fits_nothing(iris: Split) -> None:
    model = build_model("random_forest", CLASSIFICATION, validate_params("random_forest", {}), 4, 3)
    with pytest.raises(Cancelled):
        model.fit(*iris.fit_args(), FitHooks(should_stop=lambda: True))
    assert isinstance(model, SklearnModel) and not hasattr(model.estimator, "estimators_")


def test_a_cancelled_mlp_fit_raises_cancelled_and_keeps_its_checkpoint(iris: Split, tmp_path: Path) -> None:
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5  # one epoch of ~6 batches of 32, then a little more

    with pytest.raises(Cancelled):
        fit("mlp", CLASSIFICATION, iris, 3, should_stop=should_stop, checkpoint_dir=tmp_path)
    assert (tmp_path / "last.pt").is_file()
    # Resuming with the same checkpoint gives the same model as a run never interrupted.
    resumed, _ = fit("mlp", CLASSIFICATION, iris, 3, checkpoint_dir=tmp_path)
    straight, _ = fit("mlp", CLASSIFICATION, iris, 3)
    assert np.array_equal(proba_of(resumed, iris.X_te), proba_of(straight, iris.X_te))


def test_the_same_seed_gives_the_same_mlp_metrics_and_another_seed_does_not(diabetes: Split) -> None:
    def r2(seed: int) -> float:
        params = validate_params("mlp", {**FAST["mlp"], "epochs": 5, "seed": seed}, REGRESSION)
        model = build_model("mlp", REGRESSION, params, 10, 0)
        model.fit(*diabetes.fit_args(), FitHooks(device="cpu"))
        return float(r2_score(diabetes.y_te, model.predict(diabetes.X_te)))

    assert r2(1) == r2(1)
    assert r2(1) != r2(2)


def test_predict_proba_has_a_column_for_a_class_missing_from_the_training_split(iris: Split) -> None:
    keep = iris.y_tr != 1
    model = build_model("logistic_regression", CLASSIFICATION, validate_params("logistic_regression", {}), 4, 3)
    model.fit(iris.X_tr[keep], iris.y_tr[keep], iris.X_va, iris.y_va, FitHooks())
    proba = proba_of(model, iris.X_te)
    assert proba.shape == (len(iris.X_te), 3)
    assert np.all(proba[:, 1] == 0.0) and set(model.predict(iris.X_te)) <= {0, 2}


@pytest.mark.parametrize(
    "payload",
    [FunctionTransformer(os.system), make_pipeline(StandardScaler())],
    ids=["function_transformer_os_system", "pipeline"],
)
def test_a_model_skops_holding_an_untrusted_type_is_refused(payload: Any, tmp_path: Path) -> None:
    sio.dump({"estimator": payload, "task": CLASSIFICATION, "n_classes": 2}, tmp_path / SKOPS_FILE)
    with pytest.raises(ArtifactTampered, match="will not load") as info:
        load_model(tmp_path, "sklearn")
    assert type(payload).__name__ in str(info.value)


def test_a_missing_or_garbled_model_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ArtifactTampered, match="missing"):
        SklearnModel.load(tmp_path)
    (tmp_path / SKOPS_FILE).write_bytes(b"not a zip")
    with pytest.raises(ArtifactTampered, match="not a readable skops file"):
        load_model(tmp_path, "sklearn")
    with pytest.raises(MLQError, match="unknown model kind"):
        load_model(tmp_path, "pickle")
    with pytest.raises(MLQError, match="export for download"):  # an export is known, and never served
        load_model(tmp_path, "onnx")


def test_an_mlp_whose_architecture_does_not_match_its_weights_is_refused(iris: Split, tmp_path: Path) -> None:
    params = validate_params("mlp", {"hidden_layers": [8], "epochs": 1}, CLASSIFICATION)
    model = build_model("mlp", CLASSIFICATION, params, 4, 3)
    model.fit(*iris.fit_args(), FitHooks(device="cpu"))
    model.save(tmp_path)
    arch = json.loads((tmp_path / ARCHITECTURE_FILE).read_text())
    assert set(arch) == {"input_dim", "hidden_layers", "output_dim", "task", "target_mean", "target_std"}
    (tmp_path / ARCHITECTURE_FILE).write_text(json.dumps({**arch, "hidden_layers": [9]}))
    with pytest.raises(ArtifactTampered, match="cannot load the MLP"):
        load_model(tmp_path, "torch")
