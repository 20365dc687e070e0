"""Cross-validation, class weights, per-class metrics, permutation importance and warm start, on tiny real fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.algorithms import FitHooks, build_model
from training.cv import cross_validate, fold_indices
from training.data import Preprocessing, Split, prepare
from training.errors import InvalidParams
from training.importance import column_groups, permutation_importance
from training.params import validate_params
from training.pipeline import train_model
from training.registry import ModelRegistry


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def imbalanced(path: Path, n: int = 600, seed: int = 0) -> Path:
    """95 % "common", 5 % "rare"; the rare class sits apart on x1 but overlaps enough to be easy to ignore."""
    rng = np.random.default_rng(seed)
    rare = rng.random(n) < 0.05
    frame = pd.DataFrame(
        {
            "x1": rng.normal(0, 1, n) + np.where(rare, 1.6, 0.0),
            "x2": rng.normal(0, 1, n),
            "label": np.where(rare, "rare", "common"),
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_five_fold_cv_of_logistic_regression_matches_scikit_learn_on_the_same_folds() -> None:
    data = load_breast_cancer(as_frame=True)
    X, y = data.frame.drop(columns="target"), data.target.to_numpy()
    prepared = prepare(data.frame, "target", task="classification", preprocessing=Preprocessing(), split=Split())
    params = validate_params("logistic_regression", {}, "classification")
    ours = cross_validate(
        X,
        y,
        task="classification",
        n_classes=2,
        algorithm="logistic_regression",
        params=params,
        preprocessor=prepared.preprocessor,
        folds=5,
        seed=0,
    )
    folds = fold_indices(y, "classification", 5, 0)
    theirs = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), X, y, cv=folds)
    assert ours["folds"] == 5 and len(ours["per_fold"]) == 5
    assert abs(ours["mean"]["accuracy"] - theirs.mean()) <= 0.01
    assert ours["std"]["accuracy"] >= 0


def test_the_pipeline_reports_cv_mean_and_std_beside_the_test_metrics(tmp_path: Path, registry: ModelRegistry) -> None:
    result = train_model(
        data_path=imbalanced(tmp_path / "d.csv", n=200),
        target="label",
        algorithm="logistic_regression",
        model_name="cv",
        registry=registry,
        split={"cv": 3},
    )
    assert result["cv"]["folds"] == 3 and set(result["cv"]["mean"]) >= {"accuracy", "f1"}
    assert result["version"] is not None  # registered (no save_to)
    manifest = registry.manifest("default", "cv", result["version"])
    assert manifest["cv"]["mean"] == result["cv"]["mean"] and manifest["split"]["cv"] == 3
    with pytest.raises(InvalidParams, match="split.cv"):
        train_model(
            data_path=tmp_path / "d.csv",
            target="label",
            algorithm="logistic_regression",
            model_name="cv",
            registry=registry,
            split={"cv": 1},
        )


@pytest.mark.parametrize(
    "algorithm,params",
    [
        ("logistic_regression", {}),
        ("random_forest", {"n_estimators": 20, "max_depth": 3}),
        ("gradient_boosting", {"n_estimators": 20}),
        ("mlp", {"epochs": 15, "hidden_layers": [8], "lr": 0.01, "early_stopping_patience": 0}),
    ],
)
def test_balanced_class_weights_raise_minority_recall_on_a_95_5_dataset(
    tmp_path: Path, registry: ModelRegistry, algorithm: str, params: dict[str, Any]
) -> None:
    data = imbalanced(tmp_path / "d.csv")
    recalls = {}
    for weight in (None, "balanced"):
        result = train_model(
            data_path=data,
            target="label",
            algorithm=algorithm,
            model_name="imb",
            registry=registry,
            params={**params, "class_weight": weight},
            split={"test": 0.4, "validation": 0.1},
        )
        recalls[weight] = result["metrics"]["per_class"]["rare"]["recall"]
        assert any("'rare'" in w and "under 5 %" in w for w in result["warnings"])
    assert recalls["balanced"] > recalls[None], recalls


def test_per_class_metrics_and_the_confusion_matrix_are_in_the_manifest(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    result = train_model(
        data_path=imbalanced(tmp_path / "d.csv", n=200),
        target="label",
        algorithm="logistic_regression",
        model_name="pc",
        registry=registry,
    )
    assert result["version"] is not None  # registered (no save_to)
    metrics = registry.manifest("default", "pc", result["version"])["metrics"]
    assert set(metrics["per_class"]) == {"common", "rare"}
    assert set(metrics["per_class"]["rare"]) == {"precision", "recall", "f1", "support"}
    assert len(metrics["confusion_matrix"]) == 2


def test_class_weight_is_refused_for_regression() -> None:
    with pytest.raises(InvalidParams, match="classification only"):
        validate_params("random_forest", {"class_weight": "balanced"}, "regression")


def test_permutation_importance_ranks_an_informative_feature_above_noise(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    rng = np.random.default_rng(1)
    signal, noise = rng.normal(size=300), rng.normal(size=300)
    frame = pd.DataFrame(
        {"noise": noise, "signal": signal, "y": np.where(signal + 0.3 * rng.normal(size=300) > 0, "yes", "no")}
    )
    frame.to_csv(tmp_path / "s.csv", index=False)
    result = train_model(
        data_path=tmp_path / "s.csv", target="y", algorithm="logistic_regression", model_name="imp", registry=registry
    )
    assert result["version"] is not None  # registered (no save_to)
    importance = registry.manifest("default", "imp", result["version"])["feature_importance"]
    ranked = [f["name"] for f in importance["features"]]
    assert ranked[0] == "signal" and importance["features"][0]["importance"] > 0.1
    assert importance["features"][1]["importance"] < importance["features"][0]["importance"]
    assert importance["method"] == "permutation" and importance["split"] == "test"


def _epochs_to(losses: list[float], target: float) -> int:
    return next((i for i, loss in enumerate(losses, start=1) if loss <= target), len(losses) + 1)


def test_warm_start_reaches_the_same_loss_in_fewer_epochs_than_from_scratch(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    data = imbalanced(tmp_path / "d.csv", n=300)
    params = {"epochs": 25, "hidden_layers": [16], "lr": 0.01, "early_stopping_patience": 0}
    losses: dict[str, list[float]] = {"base": [], "scratch": [], "warm": []}

    def recorder(name: str):  # type: ignore[no-untyped-def]
        return lambda **p: losses[name].append(p["loss"]) if p.get("loss") is not None else None

    base = train_model(
        data_path=data,
        target="label",
        algorithm="mlp",
        model_name="ft",
        registry=registry,
        params=params,
        on_progress=recorder("base"),
    )
    target = losses["base"][-1] * 1.02
    train_model(
        data_path=data,
        target="label",
        algorithm="mlp",
        model_name="scratch",
        registry=registry,
        params=params,
        on_progress=recorder("scratch"),
    )
    warm = train_model(
        data_path=data,
        target="label",
        algorithm="mlp",
        model_name="ft",
        registry=registry,
        params={**params, "epochs": 10},
        on_progress=recorder("warm"),
        warm_start={"model": "ft", "version": base["version"]},
    )
    assert _epochs_to(losses["warm"], target) < _epochs_to(losses["scratch"], target)
    assert _epochs_to(losses["warm"], target) <= 3
    assert warm["version"] is not None  # registered (no save_to)
    manifest = registry.manifest("default", "ft", warm["version"])
    assert manifest["warm_start"]["version"] == base["version"]


def test_warm_start_refuses_other_features_classes_or_algorithms(tmp_path: Path, registry: ModelRegistry) -> None:
    data = imbalanced(tmp_path / "d.csv", n=200)
    params = {"epochs": 2, "hidden_layers": [8]}
    train_model(data_path=data, target="label", algorithm="mlp", model_name="ft", registry=registry, params=params)
    with pytest.raises(InvalidParams, match="features"):
        train_model(
            data_path=data,
            target="label",
            algorithm="mlp",
            model_name="ft",
            registry=registry,
            params=params,
            features=["x1"],
            warm_start={"model": "ft", "version": 1},
        )
    with pytest.raises(InvalidParams, match="hidden_layers"):
        train_model(
            data_path=data,
            target="label",
            algorithm="mlp",
            model_name="ft",
            registry=registry,
            params={**params, "hidden_layers": [4]},
            warm_start={"model": "ft", "version": 1},
        )
    with pytest.raises(InvalidParams, match="no version"):
        train_model(
            data_path=data,
            target="label",
            algorithm="mlp",
            model_name="ft",
            registry=registry,
            params=params,
            warm_start={"model": "ft", "version": 9},
        )
    train_model(data_path=data, target="label", algorithm="logistic_regression", model_name="lr", registry=registry)
    with pytest.raises(InvalidParams, match="not an mlp"):
        train_model(
            data_path=data,
            target="label",
            algorithm="mlp",
            model_name="ft",
            registry=registry,
            params=params,
            warm_start={"model": "lr", "version": 1},
        )


def test_permutation_importance_shuffles_transformed_columns_exactly_as_raw_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=120),
            "colour": rng.choice(["red", "blue", "green"], 120),
            "y": rng.choice(["a", "b"], 120),
        }
    )
    frame.loc[frame["colour"] == "red", "x"] += 2.0
    data = prepare(frame, "y", preprocessing=Preprocessing(), split=Split())
    groups = column_groups(data.preprocessor, data.features)
    assert groups is not None and len(groups["x"]) == 1 and len(groups["colour"]) == 3
    model = build_model(
        "logistic_regression", "classification", validate_params("logistic_regression", {}, "classification"), 4, 2
    )
    model.fit(np.asarray(data.preprocessor.transform(data.X_train)), data.y_train, None, None, FitHooks())
    fast = permutation_importance(model, data.preprocessor, data.X_test, data.y_test, "classification", seed=3)
    slow = permutation_importance(model, _Opaque(data.preprocessor), data.X_test, data.y_test, "classification", seed=3)
    assert fast == slow


class _Opaque:
    """A preprocessor whose structure cannot be read: the raw-column path is taken."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return self.inner.transform(frame)  # type: ignore[attr-defined,no-any-return]
