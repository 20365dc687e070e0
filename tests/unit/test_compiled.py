"""training.compiled against the ColumnTransformer it replaces: the same outputs and the same refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from training.compiled import CompiledPreprocessor, compile_preprocessor
from training.data import PreparedData, Preprocessing, load_preprocessor, prepare, save_preprocessor
from training.errors import InvalidInput
from training.rows import frame_from_rows


class Tolerance(TypedDict):
    rtol: float
    atol: float


TOLERANCE: Tolerance = {"rtol": 1e-6, "atol": 1e-7}


def expected(data: PreparedData, rows: list[Any]) -> np.ndarray:
    """What the ColumnTransformer gives for raw rows: the path the compiled one replaces."""
    frame = frame_from_rows(rows, data.features, data.feature_dtypes)
    return np.asarray(data.preprocessor.transform(frame), dtype=np.float32)


def compiled_for(data: PreparedData, tmp_path: Path | None = None) -> CompiledPreprocessor:
    pre = data.preprocessor
    if tmp_path is not None:  # as a worker gets it: through the skops file
        save_preprocessor(pre, tmp_path / "preprocessor.skops")
        pre = load_preprocessor(tmp_path / "preprocessor.skops")
    compiled = compile_preprocessor(pre, data.features, data.feature_dtypes)
    assert compiled is not None
    return compiled


def iris_with_a_site() -> pd.DataFrame:
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame["species"] = iris.target_names[iris.target]
    frame["site"] = np.where(np.arange(len(frame)) % 3 == 0, "north", "south")
    return frame


def messy_frame(n: int = 60) -> pd.DataFrame:
    """Numbers with gaps, text with gaps, integers and booleans as categories, a text label."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "city": rng.choice(["paris", "oslo", "rome"], n),
            "income": rng.normal(50, 10, n).round(2),
            "flag": [True, False, True] * (n // 3),
            "grade": ["1", "2", "x", "1"] * (n // 4),
            "label": np.where(np.arange(n) % 2 == 0, "yes", "no"),
        }
    )
    frame.loc[[1, 5, 9], "age"] = np.nan
    frame.loc[[2, 7], "city"] = np.nan
    frame.loc[[3], "income"] = np.nan
    return frame


BUNDLED = {
    "iris": (iris_with_a_site, "species"),
    "wine": (lambda: load_wine(as_frame=True).frame, "target"),
    "breast_cancer": (lambda: load_breast_cancer(as_frame=True).frame, "target"),
    "diabetes": (lambda: load_diabetes(as_frame=True).frame, "target"),
    "messy": (messy_frame, "label"),
}


@pytest.mark.parametrize("name", list(BUNDLED))
def test_every_row_of_a_dataset_transforms_as_the_column_transformer_does(name: str, tmp_path: Path) -> None:
    load, target = BUNDLED[name]
    frame = load()
    data = prepare(frame, target)
    compiled = compiled_for(data, tmp_path)
    records = frame.drop(columns=target).astype(object).where(frame.notna(), None).to_dict(orient="records")
    as_lists = [[r[f] for f in data.features] for r in records]
    want = expected(data, records)
    np.testing.assert_allclose(compiled.transform(records), want, **TOLERANCE)
    np.testing.assert_allclose(compiled.transform(as_lists), want, **TOLERANCE)
    assert compiled.transform(records).dtype == np.float32


def test_gaps_unknown_categories_and_odd_values_match_the_column_transformer() -> None:
    data = prepare(messy_frame(), "label")
    compiled = compiled_for(data)
    rows: list[Any] = [
        {"age": None, "city": None, "income": None, "flag": None, "grade": None},  # every value imputed
        {"age": float("nan"), "city": float("nan"), "income": 1, "flag": True, "grade": 1},  # NaN is a gap; 1 is "1"
        {"age": 30, "city": "tokyo", "income": -1e30, "flag": "maybe", "grade": 2.0},  # unseen; 2.0 is "2.0"
        [10**20, "oslo", 0, False, "x"],  # a huge int is a number
        (41, "rome", 3.5, "True", "2"),  # a tuple row; the text "True" is the category True
        {"age": 1, "city": "paris", "income": 2, "flag": False, "grade": "x", "extra": [1, 2]},  # extra key ignored
    ]
    got = compiled.transform(rows)
    np.testing.assert_allclose(got, expected(data, rows), **TOLERANCE)
    city = slice(2, 5)  # after the two number columns: paris, oslo, rome sorted → oslo, paris, rome
    assert got[2, city].sum() == 0  # tokyo lights no city column


def test_numpy_scalars_take_the_checking_path_and_give_the_same_outputs() -> None:
    data = prepare(messy_frame(), "label")
    compiled = compiled_for(data)
    rows = [
        [np.float64(30.5), np.str_("oslo"), np.int64(7), np.bool_(True), np.int32(1)],
        [np.float32("nan"), None, np.float64(2), False, "2"],
    ]
    np.testing.assert_allclose(compiled.transform(rows), expected(data, rows), **TOLERANCE)


def test_unscaled_preprocessing_is_compiled_too() -> None:
    data = prepare(messy_frame(), "label", preprocessing=Preprocessing(scale=False))
    compiled = compiled_for(data)
    rows = messy_frame().drop(columns="label").head(10).to_dict(orient="records")
    np.testing.assert_allclose(compiled.transform(rows), expected(data, rows), **TOLERANCE)


def test_a_column_the_imputer_dropped_in_training_is_dropped_here_too() -> None:
    train = pd.DataFrame({"a": [1.0, 2.0, 3.0], "empty": [np.nan] * 3, "b": [4.0, 5.0, 7.0]})
    pre = ColumnTransformer([("number", Pipeline([("impute", SimpleImputer(strategy="median"))]), ["a", "empty", "b"])])
    with pytest.warns(UserWarning):
        pre.fit(train)
    features, dtypes = ["a", "empty", "b"], {"a": "number", "empty": "number", "b": "number"}
    compiled = compile_preprocessor(pre, features, dtypes)
    assert compiled is not None and compiled.width == 2
    rows = [[None, 5.0, None], [9.0, None, 1.5]]
    with pytest.warns(UserWarning):
        want = pre.transform(frame_from_rows(rows, features, dtypes))
    np.testing.assert_allclose(compiled.transform(rows), want, **TOLERANCE)


def test_no_rows_give_an_empty_matrix_of_the_output_width() -> None:
    data = prepare(messy_frame(), "label")
    compiled = compiled_for(data)
    assert compiled.transform([]).shape == (0, expected(data, [[1, "oslo", 2, True, "x"]]).shape[1])


@pytest.mark.parametrize(
    "rows",
    [
        [{"age": 3, "city": "oslo", "income": 1, "flag": True, "grade": "x"}, "oslo"],  # not a row
        [{"age": 3, "city": "oslo", "income": 1, "flag": True}],  # a missing feature
        [[3, "oslo", 1, True]],  # too short
        [[3, "oslo", 1, True, "x"], ["3.5", "oslo", 1, True, "x"]],  # a number as a string is refused today
        [[True, "oslo", 1, True, "x"]],  # a boolean is not a number
        [[3, "oslo", float("inf"), True, "x"]],  # not finite
        [[3, "oslo", 10**400, True, "x"]],  # beyond float
        [[3, {"name": "oslo"}, 1, True, "x"]],  # not a single value
        {"age": 3},  # not a list of rows
    ],
)
def test_bad_rows_are_refused_with_the_same_error_as_the_frame_path(rows: Any) -> None:
    data = prepare(messy_frame(), "label")
    compiled = compiled_for(data)
    with pytest.raises(InvalidInput) as want:
        frame_from_rows(rows, data.features, data.feature_dtypes)
    with pytest.raises(InvalidInput) as got:
        compiled.transform(rows)
    assert got.value.to_dict() == want.value.to_dict()


def test_a_step_it_does_not_know_is_left_to_the_column_transformer() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [0.0, 1.0, 3.0]})
    pre = ColumnTransformer(
        [("number", Pipeline([("impute", SimpleImputer()), ("minmax", MinMaxScaler())]), ["a", "b"])]
    ).fit(frame)
    assert compile_preprocessor(pre, ["a", "b"], {"a": "number", "b": "number"}) is None
    assert compile_preprocessor(object(), ["a"], {"a": "number"}) is None
