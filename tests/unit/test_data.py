"""training.data on real data: sklearn's bundled datasets and small messy CSVs written here."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from training.data import (
    Preprocessing,
    Split,
    infer_task,
    load_csv,
    load_preprocessor,
    prepare,
    save_preprocessor,
)
from training.errors import ArtifactTampered, ColumnNotFound, DataError, InvalidInput
from training.rows import frame_from_rows


def write_bundled(tmp_path: Path, loader: Callable[..., Any], name: str) -> Path:
    path = tmp_path / f"{name}.csv"
    loader(as_frame=True).frame.to_csv(path, index=False)
    return path


def write_text(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def messy_frame(n: int = 40) -> pd.DataFrame:
    """Numbers with gaps, a text column with gaps, and a text label."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "city": rng.choice(["paris", "oslo", "rome"], n),
            "income": rng.normal(50, 10, n).round(2),
            "label": np.where(np.arange(n) % 2 == 0, "yes", "no"),
        }
    )
    frame.loc[[1, 5], "age"] = np.nan
    frame.loc[[2], "city"] = np.nan
    return frame


# --- load_csv -------------------------------------------------------------------------------------------------


def test_a_bundled_dataset_loads_with_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    path = write_bundled(tmp_path, load_iris, "iris")
    df = load_csv(path)
    assert df.shape == (150, 5)
    assert df.attrs["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prepare(df, "target").dataset_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_empty_file_is_refused_as_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="the CSV is empty"):
        load_csv(write_text(tmp_path, ""))


def test_a_header_without_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no rows"):
        load_csv(write_text(tmp_path, "a,b,target\n"))


def test_an_unparseable_csv_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="line 4") as info:
        load_csv(write_text(tmp_path, "a,b\n1,2\n3,4\n5,6,7\n8,9\n"))
    assert info.value.code == "invalid_data"


# --- prepare: tasks, labels, columns ----------------------------------------------------------------------------


def test_iris_is_inferred_as_classification_with_json_label_types(tmp_path: Path) -> None:
    data = prepare(load_csv(write_bundled(tmp_path, load_iris, "iris")), "target")
    assert (data.task, data.task_inferred) == ("classification", True)
    assert data.classes == [0, 1, 2] and all(type(c) is int for c in data.classes)
    assert data.feature_dtypes == {name: "number" for name in data.features}
    assert data.y_train.dtype == np.int64 and set(data.y_train.tolist()) == {0, 1, 2}
    assert len(data.X_train) + len(data.X_val) + len(data.X_test) == data.rows_used == 150


def test_diabetes_is_inferred_as_regression_with_float_targets(tmp_path: Path) -> None:
    data = prepare(load_csv(write_bundled(tmp_path, load_diabetes, "diabetes")), "target")
    assert (data.task, data.task_inferred, data.classes) == ("regression", True, None)
    assert data.y_train.dtype == np.float64


def test_an_explicit_task_is_reported_as_not_inferred(tmp_path: Path) -> None:
    data = prepare(load_csv(write_bundled(tmp_path, load_wine, "wine")), "target", task="regression")
    assert (data.task, data.task_inferred) == ("regression", False)
    assert data.y_test.dtype == np.float64


def test_infer_task_follows_the_dtype_rules() -> None:
    assert infer_task(pd.Series(["a", "b", "a"])) == "classification"
    assert infer_task(pd.Series([True, False, True])) == "classification"
    assert infer_task(pd.Series([0, 1, 2, 1, 0, 2] * 5)) == "classification"
    assert infer_task(pd.Series(range(100))) == "regression"  # too many distinct integers
    assert infer_task(pd.Series([0.5, 1.5, 0.5, 1.5])) == "regression"


def test_text_labels_become_sorted_classes_and_codes_index_them() -> None:
    data = prepare(messy_frame(), "label")
    assert data.classes == ["no", "yes"]
    assert data.feature_dtypes == {"age": "number", "city": "category", "income": "number"}
    all_x = pd.concat([data.X_train, data.X_val, data.X_test])
    all_y = np.concatenate([data.y_train, data.y_val, data.y_test])
    assert len(all_x) == len(all_y) == 40


def test_a_missing_target_column_is_named_with_the_available_ones(tmp_path: Path) -> None:
    df = load_csv(write_bundled(tmp_path, load_iris, "iris"))
    with pytest.raises(ColumnNotFound, match="'species'.*available columns: sepal length") as info:
        prepare(df, "species")
    assert info.value.code == "column_not_found"


def test_a_missing_feature_column_is_named(tmp_path: Path) -> None:
    df = load_csv(write_bundled(tmp_path, load_iris, "iris"))
    with pytest.raises(ColumnNotFound, match="feature column 'petal size'"):
        prepare(df, "target", features=["sepal length (cm)", "petal size"])


def test_only_the_chosen_features_are_used(tmp_path: Path) -> None:
    df = load_csv(write_bundled(tmp_path, load_iris, "iris"))
    data = prepare(df, "target", features=["petal width (cm)", "sepal length (cm)"])
    assert list(data.X_train.columns) == ["petal width (cm)", "sepal length (cm)"]
    assert data.preprocessor.transform(data.X_test).shape == (len(data.X_test), 2)


def test_a_one_class_target_is_refused() -> None:
    frame = messy_frame().assign(label="yes")
    with pytest.raises(DataError, match="only one class"):
        prepare(frame, "label")


def test_too_few_rows_are_refused() -> None:
    with pytest.raises(DataError, match="only 6 usable rows"):
        prepare(messy_frame(6), "label")


def test_rows_without_a_target_are_dropped() -> None:
    frame = messy_frame()
    frame.loc[[0, 3, 7], "label"] = np.nan
    assert prepare(frame, "label").rows_used == 37


def test_a_boolean_target_with_gaps_keeps_boolean_classes() -> None:
    frame = messy_frame().assign(label=[True, False, None, True] * 10)
    data = prepare(frame, "label")
    assert data.classes == [False, True] and data.rows_used == 30


def test_a_feature_column_without_values_is_refused() -> None:
    with pytest.raises(DataError, match="feature column 'blank' has no values"):
        prepare(messy_frame().assign(blank=np.nan), "label")


def test_regression_on_a_text_target_is_refused() -> None:
    with pytest.raises(DataError, match="regression needs a numeric target"):
        prepare(messy_frame(), "label", task="regression")


def test_a_stray_string_in_a_numeric_column_names_the_column_row_and_value(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 1.5},{'a' if i % 2 else 'b'}" for i in range(30))
    path = write_text(tmp_path, "id,height,label\n" + rows.replace("7,10.5,", "7,tall,") + "\n")
    df = load_csv(path)
    assert not pd.api.types.is_numeric_dtype(df["height"])  # what pandas does, and why the check exists
    with pytest.raises(DataError, match=r"column 'height'.*row 8 \(CSV line 9\).*'tall'"):
        prepare(df, "label")


def test_a_text_column_is_not_mistaken_for_a_numeric_one() -> None:
    frame = messy_frame().assign(code=["A1"] * 39 + ["7"])
    assert prepare(frame, "label").feature_dtypes["code"] == "category"


# --- cleaning -----------------------------------------------------------------------------------------------


def test_missing_values_are_imputed_with_the_train_median_and_most_frequent_category() -> None:
    data = prepare(messy_frame(), "label", preprocessing=Preprocessing(scale=False))
    assert data.rows_used == 40
    numbers = data.preprocessor.named_transformers_["number"].named_steps["impute"]
    assert numbers.statistics_[0] == pytest.approx(data.X_train["age"].median())
    out = data.preprocessor.transform(frame_from_rows([[None, None, None]], data.features, data.feature_dtypes))
    assert out[0, 0] == pytest.approx(data.X_train["age"].median())
    assert not np.isnan(out).any()


def test_missing_values_can_drop_rows_instead() -> None:
    data = prepare(messy_frame(), "label", preprocessing=Preprocessing(missing="drop"))
    assert data.rows_used == 37


def test_duplicate_rows_are_dropped_only_on_request() -> None:
    frame = pd.concat([messy_frame(), messy_frame().head(5)], ignore_index=True)
    assert prepare(frame, "label").rows_used == 45
    assert prepare(frame, "label", preprocessing=Preprocessing(deduplicate=True)).rows_used == 40


def test_preprocessing_and_split_settings_are_validated_naming_the_key() -> None:
    assert Preprocessing.from_dict(None) == Preprocessing()
    assert Split.from_dict({"seed": 3}).seed == 3
    with pytest.raises(DataError, match="preprocessing.missing") as info:
        Preprocessing.from_dict({"missing": "zero"})
    assert info.value.errors[0]["loc"] == ["preprocessing", "missing"]
    with pytest.raises(DataError, match="preprocessing.fill unknown key"):
        Preprocessing.from_dict({"fill": 1})
    with pytest.raises(DataError, match="split.test"):
        Split.from_dict({"test": 1.5})
    with pytest.raises(DataError, match="split.validation must be a number > 0"):
        Split.from_dict({"validation": 0})
    with pytest.raises(DataError, match="split.seed"):
        Split.from_dict({"seed": -1})


# --- split and fitting on train only ------------------------------------------------------------------------


def test_the_split_is_reproducible_with_a_seed_and_differs_with_another(tmp_path: Path) -> None:
    df = load_csv(write_bundled(tmp_path, load_wine, "wine"))
    first, again = prepare(df, "target"), prepare(df, "target")
    other = prepare(df, "target", split=Split(seed=1))
    pd.testing.assert_frame_equal(first.X_test, again.X_test)
    assert np.array_equal(first.y_train, again.y_train)
    assert not first.X_test.equals(other.X_test)


def test_the_split_is_stratified_with_the_requested_sizes(tmp_path: Path) -> None:
    data = prepare(load_csv(write_bundled(tmp_path, load_breast_cancer, "cancer")), "target")
    assert (len(data.X_test), len(data.X_val)) == (114, 57)  # 20% and 10% of 569 rows, rounded up
    overall = np.concatenate([data.y_train, data.y_val, data.y_test]).mean()
    for part in (data.y_train, data.y_val, data.y_test):
        assert abs(part.mean() - overall) < 0.02


def test_a_class_too_small_to_stratify_is_refused_with_the_way_out() -> None:
    frame = messy_frame()
    frame.loc[0, "label"] = "maybe"
    with pytest.raises(DataError, match="class 'maybe' has only 1 row.*split.stratify to false"):
        prepare(frame, "label")
    assert prepare(frame, "label", split=Split(stratify=False)).classes == ["maybe", "no", "yes"]


def test_the_preprocessor_is_fitted_on_the_train_split_only(tmp_path: Path) -> None:
    data = prepare(load_csv(write_bundled(tmp_path, load_diabetes, "diabetes")), "target")
    scaler = data.preprocessor.named_transformers_["number"].named_steps["scale"]
    assert np.allclose(scaler.mean_, data.X_train.mean().to_numpy())
    everything = pd.concat([data.X_train, data.X_val, data.X_test])
    assert not np.allclose(scaler.mean_, everything.mean().to_numpy())


def test_the_transform_is_dense_float32_with_one_hot_categories() -> None:
    data = prepare(messy_frame(), "label")
    out = data.preprocessor.transform(data.X_val)
    assert out.dtype == np.float32 and isinstance(out, np.ndarray)
    assert out.shape == (len(data.X_val), 2 + 3)  # age, income, and one column per city


def test_an_unknown_category_at_prediction_time_does_not_crash() -> None:
    data = prepare(messy_frame(), "label")
    rows = [{"age": 30, "city": "tokyo", "income": 40.0}, {"age": 30, "city": "oslo", "income": 40.0}]
    out = data.preprocessor.transform(frame_from_rows(rows, data.features, data.feature_dtypes))
    assert out[0, 2:].sum() == 0  # no city column lit for an unseen city
    assert out[1, 2:].sum() == 1


def test_integers_and_booleans_as_categories_match_what_training_saw() -> None:
    frame = messy_frame().assign(flag=[True, False] * 20, grade=["1", "2", "x", "1"] * 10)
    data = prepare(frame, "label")
    assert data.feature_dtypes["flag"] == data.feature_dtypes["grade"] == "category"
    as_sent = frame_from_rows(
        [{"age": 1, "city": "oslo", "income": 2, "flag": True, "grade": 1}], data.features, data.feature_dtypes
    )
    assert as_sent.loc[0, "flag"] == "True" and as_sent.loc[0, "grade"] == "1"
    encoder = data.preprocessor.named_transformers_["category"].named_steps["onehot"]
    assert "True" in encoder.categories_[1] and "1" in encoder.categories_[2]


# --- persistence --------------------------------------------------------------------------------------------


def test_the_preprocessor_round_trips_through_skops_with_identical_transforms(tmp_path: Path) -> None:
    data = prepare(messy_frame(), "label")
    path = tmp_path / "preprocessor.skops"
    save_preprocessor(data.preprocessor, path)
    loaded = load_preprocessor(path)
    assert np.array_equal(loaded.transform(data.X_test), data.preprocessor.transform(data.X_test))
    assert [p.name for p in tmp_path.iterdir()] == ["preprocessor.skops"]  # no temporary left behind


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path: Path) -> None:
    data = prepare(messy_frame(), "label")
    evil = Pipeline([("pre", data.preprocessor), ("call", FunctionTransformer(os.getcwd))])
    path = tmp_path / "preprocessor.skops"
    sio.dump(evil, path)
    with pytest.raises(ArtifactTampered, match="will not load: posix.getcwd"):
        load_preprocessor(path)


def test_a_corrupt_skops_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "preprocessor.skops"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ArtifactTampered):
        load_preprocessor(path)


# --- frame_from_rows ----------------------------------------------------------------------------------------

FEATURES = ["age", "city"]
DTYPES = {"age": "number", "city": "category"}


def test_dict_and_list_rows_build_the_same_typed_frame() -> None:
    frame = frame_from_rows(
        [{"city": "oslo", "age": 3, "extra": "ignored"}, [4.5, "rome"], [None, None]], FEATURES, DTYPES
    )
    assert list(frame.columns) == FEATURES
    assert frame["age"].dtype == np.float64 and frame["city"].dtype == object
    assert frame["age"].tolist()[:2] == [3.0, 4.5] and np.isnan(frame.loc[2, "age"])
    assert frame["city"].tolist()[:2] == ["oslo", "rome"] and pd.isna(frame.loc[2, "city"])


@pytest.mark.parametrize(
    ("rows", "row", "column", "message"),
    [
        ([{"age": 3, "city": "oslo"}, "oslo"], 1, None, "row 1 is a str"),
        ([{"age": 3}], 0, "city", "no value for feature 'city'"),
        ([[3, "oslo", 9]], 0, None, "has 3 values; expected 2"),
        ([[3, "oslo"], ["3.5", "oslo"]], 1, "age", "expected a number, got the string '3.5'"),
        ([[True, "oslo"]], 0, "age", "expected a number, got the boolean"),
        ([[[3], "oslo"]], 0, "age", "expected a number, got a list"),
        ([[3, {"name": "oslo"}]], 0, "city", "expected a single value"),
        ([[3, "oslo"], [float("inf"), "rome"]], 1, "age", "expected a finite number"),
    ],
)
def test_bad_rows_are_refused_naming_the_row_and_column(
    rows: list[Any], row: int, column: str | None, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        frame_from_rows(rows, FEATURES, DTYPES)
    assert (info.value.row, info.value.column) == (row, column)
    assert info.value.errors[0]["loc"][:2] == ["inputs", row]
