"""Data preparation: load a CSV, clean it, split it, and build the preprocessing fitted on the train split.

The preprocessor is a scikit-learn ColumnTransformer (impute → scale for numbers, impute → one-hot for categories)
that outputs a dense float32 array. It is fitted on the train split only, so validation and test metrics never see
statistics of rows the model was not trained on. It is saved with skops against an explicit trusted type list.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from training import safe_skops
from training.errors import ColumnNotFound, DataError

CLASSIFICATION = "classification"
REGRESSION = "regression"
MIN_ROWS = 10  # fewer rows than this cannot give a train, a validation and a test split worth measuring
MAX_CLASSES_FOR_INTEGERS = 20  # an integer target with more distinct values than this is a quantity, not a label
NUMERIC_SHARE = 0.9  # a text column whose values parse as numbers this often is a numeric column with a typo

# Every type a saved preprocessor may contain. skops trusts plain scikit-learn estimators by default; this list
# names them anyway (so it documents the whole pipeline) and adds the numpy objects skops does not trust itself.
# A file holding anything else is refused before anything in it is constructed.
TRUSTED_TYPES = [
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.pipeline.Pipeline",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.NoneType",
    "builtins.slice",
    "builtins.object",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int64",
    "numpy.bool_",
]


@dataclass(frozen=True)
class Preprocessing:
    """How rows are cleaned. Missing feature values are always imputable at prediction time; `missing="drop"`
    only decides whether training rows with gaps are dropped instead of filled."""

    missing: str = "impute"  # "impute" (median / most frequent) or "drop"
    deduplicate: bool = False
    scale: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Preprocessing:
        d = _check_keys(cls, "preprocessing", d)
        out = cls(**d)
        if out.missing not in ("impute", "drop"):
            raise _bad("preprocessing", "missing", f"must be 'impute' or 'drop', got {out.missing!r}")
        for key in ("deduplicate", "scale"):
            if not isinstance(getattr(out, key), bool):
                raise _bad("preprocessing", key, f"must be true or false, got {getattr(out, key)!r}")
        return out


@dataclass(frozen=True)
class Split:
    """Fractions of the cleaned rows held out for test and validation; the rest trains."""

    test: float = 0.2
    validation: float = 0.1
    seed: int = 0
    stratify: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Split:
        d = _check_keys(cls, "split", d)
        out = cls(**d)
        for key in ("test", "validation"):  # both > 0: metrics need a test split, early stopping a validation one
            value = getattr(out, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise _bad("split", key, f"must be a number > 0 and < 1, got {value!r}")
        if out.test + out.validation > 0.9:
            raise _bad("split", "test", f"test + validation must be <= 0.9, got {out.test + out.validation}")
        if isinstance(out.seed, bool) or not isinstance(out.seed, int) or out.seed < 0:
            raise _bad("split", "seed", f"must be an integer >= 0, got {out.seed!r}")
        if not isinstance(out.stratify, bool):
            raise _bad("split", "stratify", f"must be true or false, got {out.stratify!r}")
        return out


@dataclass
class PreparedData:
    """Everything training needs: raw split frames, encoded targets, and the preprocessor fitted on X_train."""

    task: str
    task_inferred: bool
    target: str
    features: list[str]
    feature_dtypes: dict[str, str]  # "number" | "category": what a raw prediction row must contain
    classes: list[Any] | None  # sorted original labels (JSON types); y codes index this list
    X_train: pd.DataFrame
    X_val: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    preprocessor: ColumnTransformer
    dataset_sha256: str
    rows_used: int


def _check_keys(cls: type, section: str, d: dict[str, Any] | None) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise DataError(f"{section} must be an object", errors=[{"loc": [section], "msg": "not an object"}])
    known = [f.name for f in fields(cls)]
    for key in d:
        if key not in known:
            raise _bad(section, key, f"unknown key; valid keys are {', '.join(known)}")
    return dict(d)


def _bad(section: str, key: str, msg: str) -> DataError:
    return DataError(f"{section}.{key} {msg}", errors=[{"loc": [section, key], "msg": msg}])


def load_csv(path: Path | str) -> pd.DataFrame:
    """Read a CSV; df.attrs["sha256"] is the sha256 of the file's bytes (prepare reports it)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the CSV {path}: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise DataError("the CSV is empty: it has no header and no rows")
    try:
        df = pd.read_csv(io.BytesIO(raw))
    except pd.errors.EmptyDataError as exc:
        raise DataError("the CSV is empty: it has no header and no rows") from exc
    except pd.errors.ParserError as exc:
        line = re.search(r"line (\d+)", str(exc))
        where = f" at line {line.group(1)}" if line else ""
        raise DataError(
            f"the CSV cannot be parsed{where}: {str(exc).strip()}; every row needs as many "
            "fields as the header (quote fields that contain commas)"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"the CSV is not valid UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    if len(df) == 0:
        raise DataError(f"the CSV has a header ({', '.join(map(str, df.columns))}) but no rows")
    df.attrs["sha256"] = hashlib.sha256(raw).hexdigest()
    return df


def infer_task(y: pd.Series) -> str:
    """classification for text/bool/category labels or a few distinct integers; regression otherwise."""
    y = y.dropna()
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return CLASSIFICATION
    if pd.api.types.is_integer_dtype(y):
        distinct = y.nunique()
        if distinct <= MAX_CLASSES_FOR_INTEGERS and distinct <= max(2, 0.5 * len(y)):
            return CLASSIFICATION
    return REGRESSION


def _numeric_with_strings(df: pd.DataFrame, columns: list[str]) -> None:
    """Turn text columns that are really numbers into numbers, or refuse the few values that are not.

    pandas reads a numeric column holding one stray string as text; left alone it would be one-hot encoded,
    silently turning a quantity into hundreds of categories.
    """
    for name in columns:
        col = df[name]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        present = col.notna().to_numpy()
        if not present.any() or col[present].map(type).eq(bool).any():
            continue
        parsed = pd.to_numeric(col.astype(str).str.strip().where(present), errors="coerce")
        bad = present & parsed.isna().to_numpy()
        if not bad.any():
            df[name] = parsed
        elif 1 - bad.sum() / present.sum() >= NUMERIC_SHARE:
            pos = int(np.flatnonzero(bad)[0])
            value = col.iloc[pos]
            raise DataError(
                f"column {name!r} holds numbers but row {pos + 1} (CSV line {pos + 2}) has {value!r}; "
                "fix or blank that value, or exclude the column from features",
                errors=[{"loc": ["data", name, pos + 1], "msg": f"expected a number, got {value!r}"}],
            )


def as_categories(values: Any) -> pd.Series:
    """Categories as text with NaN for gaps, the same way in training and at prediction time, so that 1 and "1"
    are one category."""
    s = pd.Series(values, dtype=object)
    missing = s.isna().to_numpy()
    text = np.array([str(v) for v in s.to_numpy()], dtype=object)
    text[missing] = np.nan
    return pd.Series(text, index=s.index, dtype=object)


def _build_preprocessor(numbers: list[str], categories: list[str], scale: bool) -> ColumnTransformer:
    number_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        number_steps.append(("scale", StandardScaler()))
    # The float32 cast keeps the whole output float32 (ColumnTransformer stacks without converting).
    number_steps.append(("float32", FunctionTransformer(np.float32, feature_names_out="one-to-one")))
    parts: list[tuple[str, Any, list[str]]] = []
    if numbers:
        parts.append(("number", Pipeline(number_steps), numbers))
    if categories:
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        impute = SimpleImputer(strategy="most_frequent")
        parts.append(("category", Pipeline([("impute", impute), ("onehot", onehot)]), categories))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def _encode_target(y: pd.Series, task: str) -> tuple[np.ndarray, list[Any] | None]:
    if task == REGRESSION:
        if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
            raise DataError(
                f"regression needs a numeric target, but {y.name!r} holds {y.iloc[0]!r}; "
                "use task 'classification' or pick a numeric target"
            )
        return y.to_numpy(dtype=np.float64), None
    if not (pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y)):
        y = as_categories(y).rename(y.name)  # mixed text labels sort only as text
    uniques, codes = np.unique(y.to_numpy(), return_inverse=True)
    classes = [v.item() if isinstance(v, np.generic) else v for v in uniques]
    if len(classes) < 2:
        raise DataError(f"the target {y.name!r} has only one class ({classes[0]!r}); classification needs two")
    return codes.astype(np.int64), classes


def _split(n: int, codes: np.ndarray | None, classes: list[Any] | None, split: Split) -> tuple[np.ndarray, ...]:
    index = np.arange(n)
    stratify = codes if (codes is not None and split.stratify) else None
    if stratify is not None and classes is not None:
        counts = np.bincount(stratify, minlength=len(classes))
        if counts.min() < 2:
            raise DataError(
                f"class {classes[int(counts.argmin())]!r} has only {counts.min()} row; a stratified "
                "split needs at least 2 rows per class (better 5+): add rows, drop that class, "
                "or set split.stratify to false"
            )
    try:
        rest, test = train_test_split(index, test_size=split.test, random_state=split.seed, stratify=stratify)
        share = split.validation / (1 - split.test)
        train, val = train_test_split(
            rest, test_size=share, random_state=split.seed, stratify=None if stratify is None else stratify[rest]
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {n} rows into train/validation/test ({exc}); add rows, change the "
            "split fractions, or set split.stratify to false"
        ) from exc
    return train, val, test


def prepare(
    df: pd.DataFrame,
    target: str,
    features: list[str] | None = None,
    task: str | None = None,
    preprocessing: Preprocessing = Preprocessing(),
    split: Split = Split(),  # noqa: B008 - frozen, safe to share
) -> PreparedData:
    """Clean, split and fit the preprocessor on the train split. See PreparedData for what comes back."""
    available = ", ".join(map(str, df.columns))
    if target not in df.columns:
        raise ColumnNotFound(
            f"target column {target!r} is not in the data; available columns: {available}",
            errors=[{"loc": ["target"], "msg": f"no column {target!r}"}],
        )
    if task is not None and task not in (CLASSIFICATION, REGRESSION):
        raise DataError(f"task must be 'classification' or 'regression', got {task!r}")
    features = [c for c in df.columns if c != target] if features is None else list(features)
    for name in features:
        if name not in df.columns:
            raise ColumnNotFound(
                f"feature column {name!r} is not in the data; available columns: {available}",
                errors=[{"loc": ["features"], "msg": f"no column {name!r}"}],
            )
    if not features or target in features or len(set(features)) != len(features):
        raise DataError("features must be a non-empty list of distinct columns that excludes the target")
    sha = df.attrs.get("sha256") or hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()

    data = df[features + [target]].copy()
    _numeric_with_strings(data, features if task == CLASSIFICATION else features + [target])
    data = data[data[target].notna()].reset_index(drop=True)  # rows without a label teach nothing
    for name in features:
        if data[name].isna().all():
            raise DataError(f"feature column {name!r} has no values; exclude it from features")
    if preprocessing.missing == "drop":
        data = data.dropna(subset=features).reset_index(drop=True)
    if preprocessing.deduplicate:
        data = data.drop_duplicates().reset_index(drop=True)
    if len(data) < MIN_ROWS:
        raise DataError(
            f"only {len(data)} usable rows (after dropping rows without a target"
            f"{', with gaps' if preprocessing.missing == 'drop' else ''}"
            f"{', duplicated' if preprocessing.deduplicate else ''}); need at least {MIN_ROWS}"
        )

    # Gaps in the target make pandas widen ints to float and bools to object; undo that once they are dropped.
    y = data[target]
    if pd.api.types.is_float_dtype(y) and (y == y.round()).all():
        y = y.astype(np.int64)
    elif y.dtype == object and y.map(type).eq(bool).all():
        y = y.astype(bool)
    task_inferred = task is None
    task = infer_task(y) if task is None else task
    y_all, classes = _encode_target(y, task)

    feature_dtypes = {
        n: "number"
        if pd.api.types.is_numeric_dtype(data[n]) and not pd.api.types.is_bool_dtype(data[n])
        else "category"
        for n in features
    }
    X = pd.DataFrame(
        {n: data[n].astype(np.float64) if feature_dtypes[n] == "number" else as_categories(data[n]) for n in features}
    )
    train, val, test = _split(len(X), y_all if classes else None, classes, split)
    X_train, X_val, X_test = (X.iloc[i].reset_index(drop=True) for i in (train, val, test))
    numbers = [n for n in features if feature_dtypes[n] == "number"]
    categories = [n for n in features if feature_dtypes[n] == "category"]
    preprocessor = _build_preprocessor(numbers, categories, preprocessing.scale)
    preprocessor.fit(X_train)
    return PreparedData(
        task=task,
        task_inferred=task_inferred,
        target=target,
        features=features,
        feature_dtypes=feature_dtypes,
        classes=classes,
        X_train=X_train,
        X_val=X_val,
        X_test=X_test,
        y_train=y_all[train],
        y_val=y_all[val],
        y_test=y_all[test],
        preprocessor=preprocessor,
        dataset_sha256=sha,
        rows_used=len(X),
    )


def save_preprocessor(pre: ColumnTransformer, path: Path) -> None:
    """Write `pre` with skops, atomically; refuses to write a type that load_preprocessor would not trust."""
    safe_skops.dump(pre, path, TRUSTED_TYPES)


def load_preprocessor(path: Path) -> ColumnTransformer:
    """Load a preprocessor saved by save_preprocessor; any type outside TRUSTED_TYPES is refused unbuilt."""
    return safe_skops.load(path, TRUSTED_TYPES)
