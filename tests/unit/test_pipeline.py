"""The pipeline end to end: a CSV in, a registered version out, and predictions from it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.errors import Cancelled, ColumnNotFound, InvalidName, InvalidParams, MLQError, UnknownAlgorithm
from training.pipeline import train_model
from training.predictors import load_predictor
from training.registry import ModelRegistry


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


@pytest.fixture(scope="module")
def csvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    iris = load_iris(as_frame=True)
    iris_frame = iris.frame.drop(columns="target").assign(species=iris.target_names[iris.target])
    return {
        "iris": write(iris_frame, root / "iris.csv"),
        "wine": write(load_wine(as_frame=True).frame, root / "wine.csv"),
        "breast_cancer": write(load_breast_cancer(as_frame=True).frame, root / "bc.csv"),
        "diabetes": write(load_diabetes(as_frame=True).frame, root / "diabetes.csv"),
    }


def messy_csv(path: Path) -> Path:
    """Iris with blanks, a categorical column and duplicated rows: what a user's CSV looks like."""
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target").assign(species=iris.target_names[iris.target])
    rng = np.random.default_rng(0)
    frame["garden"] = rng.choice(["north", "south", "east"], size=len(frame))
    frame.loc[rng.choice(len(frame), 12, replace=False), "sepal width (cm)"] = np.nan
    frame.loc[rng.choice(len(frame), 5, replace=False), "garden"] = np.nan
    return write(pd.concat([frame, frame.head(10)]), path)


CLASSIFIERS = [
    ("logistic_regression", None),
    ("random_forest", {"n_estimators": 50}),
    ("gradient_boosting", {"n_estimators": 50}),
    ("mlp", {"epochs": 30, "hidden_layers": [32]}),
]
REGRESSORS = [
    ("linear_regression", None),
    ("ridge", None),
    ("random_forest", {"n_estimators": 50}),
    ("gradient_boosting", {"n_estimators": 50}),
    ("mlp", {"epochs": 40, "hidden_layers": [32]}),
]


@pytest.mark.parametrize(("algorithm", "params"), CLASSIFIERS)
@pytest.mark.parametrize(("dataset", "floor"), [("iris", 0.85), ("wine", 0.85)])
def test_each_classifier_reaches_sensible_accuracy(
    csvs: dict[str, Path], registry: ModelRegistry, algorithm: str, params: dict[str, Any], dataset: str, floor: float
) -> None:
    target = "species" if dataset == "iris" else "target"
    result = train_model(
        data_path=csvs[dataset],
        target=target,
        algorithm=algorithm,
        model_name=dataset,
        registry=registry,
        params=params,
    )
    assert result["version"] == 1
    assert result["task"] == "classification" and result["task_inferred"] is True
    assert result["metrics"]["accuracy"] >= floor, result["metrics"]
    assert set(result["metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"}
    check_drift_reference(registry.manifest("default", dataset, 1))


def check_drift_reference(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Every algorithm's version carries the bins of its training split and of its test predictions."""
    reference: dict[str, Any] = manifest["drift_reference"]
    rows = manifest["dataset"]["rows"]
    assert reference["rows"] == rows["train"]
    assert [f["name"] for f in reference["features"]] == [f["name"] for f in manifest["features"]]
    assert all(sum(f["counts"]) == rows["train"] for f in reference["features"])
    assert sum(reference["predictions"]["counts"]) == reference["predictions"]["rows"] == rows["test"]
    return reference


@pytest.mark.parametrize(("algorithm", "params"), REGRESSORS)
def test_each_regressor_explains_the_diabetes_target(
    csvs: dict[str, Path], registry: ModelRegistry, algorithm: str, params: dict[str, Any]
) -> None:
    result = train_model(
        data_path=csvs["diabetes"],
        target="target",
        algorithm=algorithm,
        model_name="diabetes",
        registry=registry,
        params=params,
    )
    assert result["task"] == "regression"
    assert result["metrics"]["r2"] > 0.15, result["metrics"]
    assert result["metrics"]["rmse"] > result["metrics"]["mae"] > 0
    assert check_drift_reference(registry.manifest("default", "diabetes", 1))["predictions"]["kind"] == "number"


def test_our_logistic_regression_matches_a_plain_sklearn_pipeline_on_the_same_split(
    csvs: dict[str, Path], registry: ModelRegistry
) -> None:
    result = train_model(
        data_path=csvs["breast_cancer"],
        target="target",
        algorithm="logistic_regression",
        model_name="bc",
        registry=registry,
        split={"test": 0.2, "validation": 0.1, "seed": 0},
    )
    # Rebuild the very same test split the pipeline used (it records the sizes and seed in the manifest).
    manifest = registry.manifest("default", "bc", 1)
    frame = load_breast_cancer(as_frame=True).frame
    x, y = frame.drop(columns="target"), frame["target"]
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=manifest["dataset"]["rows"]["test"], random_state=0, stratify=y
    )
    plain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_rest, y_rest)
    plain_accuracy = plain.score(x_test, y_test)
    assert abs(result["metrics"]["accuracy"] - plain_accuracy) <= 0.01 + 1e-9, (result["metrics"], plain_accuracy)


def test_a_messy_csv_trains_and_predicts_from_raw_rows(tmp_path: Path, registry: ModelRegistry) -> None:
    path = messy_csv(tmp_path / "messy.csv")
    result = train_model(
        data_path=path,
        target="species",
        algorithm="random_forest",
        model_name="messy",
        registry=registry,
        preprocessing={"missing": "impute", "deduplicate": True},
    )
    assert result["metrics"]["accuracy"] > 0.8
    manifest = registry.manifest("default", "messy", 1)
    assert {"name": "garden", "dtype": "category"} in manifest["features"]
    # The 10 appended copies (and iris' own duplicate row) were dropped; nothing else was.
    assert manifest["dataset"]["rows_used"] == len(pd.read_csv(path).drop_duplicates()) < len(pd.read_csv(path))
    # Gaps the preprocessing imputes are counted in the reference's missing bins (the last of each feature).
    assert sum(f["counts"][-1] for f in check_drift_reference(manifest)["features"]) > 0
    predictor = load_predictor(registry, "default", "messy")
    rows = [
        {
            "sepal length (cm)": 5.1,
            "sepal width (cm)": None,
            "petal length (cm)": 1.4,
            "petal width (cm)": 0.2,
            "garden": "a garden never seen",
        }
    ]
    [prediction] = predictor.predict(rows)
    assert prediction["label"] == "setosa"


def test_the_manifest_records_what_is_needed_to_trace_the_model(csvs: dict[str, Path], registry: ModelRegistry) -> None:
    train_model(
        data_path=csvs["iris"],
        target="species",
        algorithm="mlp",
        model_name="iris",
        registry=registry,
        params={"epochs": 2},
        dataset_id="ds_test",
        job_id="job_test",
    )
    manifest = registry.manifest("default", "iris", 1)
    for key in (
        "algorithm",
        "task",
        "params",
        "metrics",
        "features",
        "classes",
        "dataset",
        "created_at",
        "library_versions",
        "files",
        "artifact",
        "job_id",
    ):
        assert key in manifest, key
    assert manifest["classes"] == ["setosa", "versicolor", "virginica"]
    assert manifest["params"]["epochs"] == 2 and manifest["params"]["optimizer"] == "adam"
    assert set(manifest["files"]) == {"preprocessor.skops", "model.safetensors", "architecture.json"}
    assert json.loads((registry.verified_dir("default", "iris", 1) / "architecture.json").read_text())["task"]


def test_the_same_seed_gives_the_same_metrics(csvs: dict[str, Path], registry: ModelRegistry) -> None:
    runs = [
        train_model(
            data_path=csvs["wine"],
            target="target",
            algorithm="mlp",
            model_name="wine",
            registry=registry,
            params={"epochs": 5, "seed": 3},
        )["metrics"]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_a_cancelled_training_registers_nothing(csvs: dict[str, Path], registry: ModelRegistry, tmp_path: Path) -> None:
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        train_model(
            data_path=csvs["iris"],
            target="species",
            algorithm="mlp",
            model_name="iris",
            registry=registry,
            params={"epochs": 50, "batch_size": 8},
            should_stop=should_stop,
            checkpoint_dir=tmp_path / "ckpt",
        )
    assert len(calls) == 4  # stopped at the first batch that saw the flag
    assert registry.list_models("default") == []


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"algorithm": "xgboost"}, UnknownAlgorithm, "logistic_regression"),
        ({"params": {"n_estimators": 0}, "algorithm": "random_forest"}, InvalidParams, "n_estimators"),
        ({"target": "nope"}, ColumnNotFound, "species"),
        ({"model_name": "../escape"}, InvalidName, "model"),
        ({"algorithm": "linear_regression"}, InvalidParams, "classification"),
    ],
)
def test_bad_requests_get_their_specific_error(
    csvs: dict[str, Path], registry: ModelRegistry, kwargs: dict[str, Any], error: type[MLQError], fragment: str
) -> None:
    args = {
        "data_path": csvs["iris"],
        "target": "species",
        "algorithm": "logistic_regression",
        "model_name": "iris",
        "registry": registry,
        **kwargs,
    }
    with pytest.raises(error) as err:
        train_model(**args)
    assert fragment in err.value.message
    assert registry.list_models("default") == []
