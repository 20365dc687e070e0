"""Predictor: a registered version built the way the pipeline builds one, loaded and asked for predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris

from training.algorithms import FitHooks, build_model
from training.data import prepare, save_preprocessor
from training.errors import ArtifactTampered, InvalidInput, InvalidParams
from training.manifest import ModelManifest
from training.params import validate_params
from training.predictor import Predictor
from training.predictors import load_predictor
from training.registry import ModelRegistry


def iris_frame() -> pd.DataFrame:
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame["species"] = iris.target_names[iris.target]
    # A text column too, so rows carry both feature dtypes the preprocessor knows.
    frame["site"] = np.where(np.arange(len(frame)) % 3 == 0, "north", "south")
    return frame


def register_version(
    registry: ModelRegistry,
    staging: Path,
    name: str,
    frame: pd.DataFrame,
    target: str,
    algorithm: str,
    params: dict[str, Any] | None = None,
) -> ModelManifest:
    """Prepare, fit and register a version exactly as training.pipeline does (without reading a CSV)."""
    data = prepare(frame, target)
    clean = validate_params(algorithm, params, data.task)
    x_train, x_val = data.preprocessor.transform(data.X_train), data.preprocessor.transform(data.X_val)
    n_classes = len(data.classes) if data.classes is not None else 0
    model = build_model(algorithm, data.task, clean, x_train.shape[1], n_classes)
    model.fit(x_train, data.y_train, x_val, data.y_val, FitHooks(device="cpu"))
    staging.mkdir(parents=True)
    save_preprocessor(data.preprocessor, staging / "preprocessor.skops")
    model.save(staging)
    manifest = {
        "algorithm": algorithm,
        "task": data.task,
        "params": clean,
        "metrics": {},
        "features": [{"name": f, "dtype": data.feature_dtypes[f]} for f in data.features],
        "classes": data.classes,
        "model_kind": model.kind,
        "preprocessor_file": "preprocessor.skops",
        "dataset": {"id": None, "sha256": data.dataset_sha256},
    }
    return registry.register("default", name, staging, manifest)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    root = tmp_path_factory.mktemp("registry")
    registry = ModelRegistry(root / "models", secret_key="test-key")
    register_version(registry, root / "s1", "iris", iris_frame(), "species", "logistic_regression")
    diabetes = load_diabetes(as_frame=True).frame
    register_version(registry, root / "s2", "diabetes", diabetes, "target", "ridge")
    return registry


@pytest.fixture(scope="module")
def iris(registry: ModelRegistry) -> Predictor:
    return load_predictor(registry, "default", "iris")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    frame = iris_frame()
    records: list[dict[str, Any]] = frame.drop(columns="species").iloc[::10].to_dict(orient="records")
    return records


def test_loading_resolves_the_latest_version_and_reads_the_manifest(iris: Predictor) -> None:
    assert (iris.name, iris.version, iris.task) == ("iris", 1, "classification")
    assert iris.classes == ["setosa", "versicolor", "virginica"]
    assert iris.features == ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)", "site"]


def test_dict_rows_and_array_rows_give_the_same_predictions(iris: Predictor, rows: list[dict[str, Any]]) -> None:
    as_arrays = [[r[f] for f in iris.features] for r in rows]
    by_dict = iris.predict(rows)
    assert by_dict == iris.predict(as_arrays)
    assert [p["row"] for p in by_dict] == list(range(len(rows)))
    expected = iris_frame()["species"].iloc[::10].tolist()
    accuracy = np.mean([p["label"] == e for p, e in zip(by_dict, expected, strict=True)])
    assert accuracy >= 0.8
    assert iris.classes is not None
    for p in by_dict:
        assert set(p["proba"]) == set(iris.classes)
        assert sum(p["proba"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["label"] == max(p["proba"], key=p["proba"].get)
        assert all(v == round(v, 6) for v in p["proba"].values())


def test_output_chooses_between_label_and_probabilities(iris: Predictor, rows: list[dict[str, Any]]) -> None:
    labels = iris.predict(rows, {"output": "label"})
    probas = iris.predict(rows, {"output": "proba"})
    both = iris.predict(rows)
    assert all(set(p) == {"row", "label"} for p in labels)
    assert all(set(p) == {"row", "proba"} for p in probas)
    assert [p["label"] for p in labels] == [p["label"] for p in both]
    assert [p["proba"] for p in probas] == [p["proba"] for p in both]


def test_top_k_keeps_only_the_most_probable_labels_most_probable_first(
    iris: Predictor, rows: list[dict[str, Any]]
) -> None:
    full = iris.predict(rows)
    top1 = iris.predict(rows, {"top_k": 1})
    top2 = iris.predict(rows, {"top_k": 2})
    for f, one, two in zip(full, top1, top2, strict=True):
        assert list(one["proba"]) == [f["label"]]
        assert len(two["proba"]) == 2
        assert list(two["proba"]) == sorted(f["proba"], key=lambda k: -f["proba"][k])[:2]


def test_threshold_drops_rows_whose_top_probability_is_lower_and_keeps_row_indices(
    iris: Predictor, rows: list[dict[str, Any]]
) -> None:
    full = iris.predict(rows)
    kept = iris.predict(rows, {"threshold": 0.9})
    expected = [p for p in full if max(p["proba"].values()) >= 0.9]
    assert kept == expected
    assert 0 < len(kept) < len(full)  # iris has confident and unsure rows: the test really filters
    assert iris.predict(rows, {"threshold": 0}) == full


def test_sort_orders_by_top_probability_and_none_keeps_input_order(iris: Predictor, rows: list[dict[str, Any]]) -> None:
    desc = iris.predict(rows, {"sort": "desc"})
    asc = iris.predict(rows, {"sort": "asc"})
    tops_desc = [max(p["proba"].values()) for p in desc]
    tops_asc = [max(p["proba"].values()) for p in asc]
    assert tops_desc == sorted(tops_desc, reverse=True)
    assert tops_asc == sorted(tops_asc)
    assert sorted(p["row"] for p in desc) == list(range(len(rows)))
    assert [p["row"] for p in iris.predict(rows, {"sort": "none"})] == list(range(len(rows)))


@pytest.mark.parametrize(
    ("postprocess", "key"),
    [
        ({"topk": 2}, "topk"),
        ({"output": "labels"}, "output"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 4}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"sort": "up"}, "sort"),
    ],
)
def test_a_bad_postprocess_option_is_refused_naming_the_key(
    iris: Predictor, rows: list[dict[str, Any]], postprocess: dict[str, Any], key: str
) -> None:
    with pytest.raises(InvalidParams, match=key) as caught:
        iris.predict(rows, postprocess)
    assert caught.value.errors[0]["loc"] == ["postprocess", key]


def test_a_row_missing_a_feature_is_refused_naming_the_row_and_the_column(
    iris: Predictor, rows: list[dict[str, Any]]
) -> None:
    broken = [dict(r) for r in rows]
    del broken[2]["petal width (cm)"]
    with pytest.raises(InvalidInput, match="petal width") as caught:
        iris.predict(broken)
    assert (caught.value.row, caught.value.column) == (2, "petal width (cm)")


def test_a_string_in_a_number_column_is_refused(iris: Predictor, rows: list[dict[str, Any]]) -> None:
    broken = [dict(r) for r in rows]
    broken[1]["sepal length (cm)"] = "five"
    with pytest.raises(InvalidInput, match="five") as caught:
        iris.predict(broken)
    assert (caught.value.row, caught.value.column) == (1, "sepal length (cm)")


def test_an_unseen_category_still_predicts(iris: Predictor, rows: list[dict[str, Any]]) -> None:
    odd = [dict(r, site="east") for r in rows[:3]]
    assert [p["row"] for p in iris.predict(odd)] == [0, 1, 2]


def test_regression_returns_values_sorted_on_request_and_refuses_classification_options(
    registry: ModelRegistry,
) -> None:
    diabetes = load_predictor(registry, "default", "diabetes")
    frame = load_diabetes(as_frame=True).frame
    rows = frame.drop(columns="target").iloc[:20].to_dict(orient="records")
    out = diabetes.predict(rows)
    assert [set(p) for p in out] == [{"row", "value"}] * 20
    values = np.array([p["value"] for p in out])
    assert np.corrcoef(values, frame["target"].iloc[:20])[0, 1] > 0.5  # a real fit, not noise
    desc = diabetes.predict(rows, {"sort": "desc"})
    assert [p["value"] for p in desc] == sorted(values.tolist(), reverse=True)
    for option in ({"threshold": 0.5}, {"top_k": 1}):
        with pytest.raises(InvalidParams, match="classification"):
            diabetes.predict(rows, option)


def test_the_production_alias_is_served_by_default(registry: ModelRegistry, tmp_path: Path) -> None:
    register_version(registry, tmp_path / "s", "iris", iris_frame(), "species", "logistic_regression", {"C": 0.01})
    assert load_predictor(registry, "default", "iris").version == 2
    registry.set_alias("default", "iris", "production", 1)
    try:
        assert load_predictor(registry, "default", "iris").version == 1
        assert load_predictor(registry, "default", "iris", "2").version == 2
    finally:
        registry.delete_alias("default", "iris", "production")
        registry.delete_version("default", "iris", 2)


def test_a_tampered_preprocessor_is_refused_before_anything_is_loaded(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    register_version(registry, tmp_path / "s", "iris", iris_frame(), "species", "logistic_regression")
    path = registry.root / "default" / "iris" / "1" / "preprocessor.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactTampered, match="preprocessor.skops.*sha256"):
        load_predictor(registry, "default", "iris")


def test_a_torch_mlp_version_loads_and_predicts_like_a_sklearn_one(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    registry = ModelRegistry(tmp_path / "models")
    params = {"epochs": 3, "hidden_layers": [8], "batch_size": 32, "early_stopping_patience": 0}
    register_version(registry, tmp_path / "s", "iris-mlp", iris_frame(), "species", "mlp", params)
    mlp = load_predictor(registry, "default", "iris-mlp")
    assert mlp.manifest["model_kind"] == "torch"
    out = mlp.predict(rows, {"top_k": 2, "sort": "desc"})
    assert len(out) == len(rows)
    assert mlp.classes is not None
    assert all(len(p["proba"]) == 2 and p["label"] in mlp.classes for p in out)


def test_regression_values_read_as_the_model_computed_them_not_as_widened_float32(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    frame = load_diabetes(as_frame=True).frame
    rows = frame.drop(columns="target").iloc[:20].to_dict(orient="records")
    params = {"epochs": 2, "hidden_layers": [8], "batch_size": 32, "early_stopping_patience": 0}
    mlp_registry = ModelRegistry(tmp_path / "models")
    register_version(mlp_registry, tmp_path / "s", "diabetes-mlp", frame, "target", "mlp", params)
    for predictor in (
        load_predictor(registry, "default", "diabetes"),
        load_predictor(mlp_registry, "default", "diabetes-mlp"),
    ):
        values = [p["value"] for p in predictor.predict(rows)]
        # A value float32 holds exactly came from float32 (~7 significant digits): 210.2832, never 210.283203125.
        widened = [v for v in values if float(np.float32(v)) == v and repr(v) != repr(float(str(np.float32(v))))]
        assert values and not widened, (predictor.name, widened)


def test_the_compiled_preprocessing_gives_the_scores_of_the_column_transformer(
    iris: Predictor, rows: list[dict[str, Any]]
) -> None:
    assert iris.compiled is not None  # the pipeline's preprocessor always compiles
    uncompiled = Predictor(
        tenant="default",
        name="iris",
        version=iris.version,
        manifest=iris.manifest,
        preprocessor=iris.preprocessor,
        model=iris.model,
    )
    uncompiled.compiled = None
    messy = [*rows, {**rows[0], "site": "east"}, {**rows[1], "petal width (cm)": None, "site": None}]
    np.testing.assert_allclose(iris.scores(messy), uncompiled.scores(messy), rtol=1e-6, atol=1e-9)
    assert [p["label"] for p in iris.predict(messy)] == [p["label"] for p in uncompiled.predict(messy)]
