"""The fitted preprocessing as a few numpy operations on raw rows: what a Predictor runs for every batch.

The saved ColumnTransformer (training/data.py) is impute → scale → float32 for numbers and impute → one-hot for
categories. Called on a one-row pandas frame it spends ~1 ms validating its input and indexing pandas for
arithmetic that takes microseconds, and the frame itself costs as much again. `compile_preprocessor` reads the fitted
values out once, at load time (medians and most frequent categories, means and scales, category tables), and
`CompiledPreprocessor.transform` applies them to the rows as they arrive: lists in feature order or dicts keyed
by feature, with no pandas on the way.

Only the structure data.py builds is compiled. Anything else (another step, an option that changes what a step
computes) makes `compile_preprocessor` return None and the caller keeps the ColumnTransformer. A probe at
compile time runs both on the same rows and refuses to compile if they differ, so a scikit-learn release that
changes a step's meaning falls back instead of serving different numbers.

Rows are refused exactly as training/rows.py refuses them: a row with anything the fast path does not take as it
is (a missing key, a string in a number column, a numpy scalar, a nested value) goes through `frame_from_rows`,
which raises its error naming row and column, or returns the typed values.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from training.errors import NotCompilable
from training.rows import frame_from_rows

log = logging.getLogger(__name__)

# Value types the fast path takes as they are; anything else goes the slow, checking way (training/rows.py).
NUMBER_TYPES = frozenset({int, float, type(None)})
CATEGORY_TYPES = frozenset({str, int, float, bool, type(None)})
UNKNOWN_PROBE = "\x00mlq-unseen-category"  # a category no training data holds: must encode as all zeros
PROBE_RTOL = 1e-6  # float32 outputs: a few units in the last place


@dataclass(frozen=True)
class NumberPart:
    """Numeric columns: fill NaN with `fill`, then (x - mean) / scale, as SimpleImputer + StandardScaler do."""

    columns: list[int]  # positions in the feature list, in the transformer's order
    whole_row: bool  # columns are every feature in order: rows need no re-indexing (all-numeric data)
    fill: np.ndarray  # float64, one per column
    keep: np.ndarray | None  # columns the imputer kept (it drops those empty in training); None: all
    mean: np.ndarray | None
    scale: np.ndarray | None

    @property
    def width(self) -> int:
        return len(self.columns) if self.keep is None else len(self.keep)


@dataclass(frozen=True)
class CategoryPart:
    """One categorical column: a missing value becomes `fill`, then one-hot over `index` (unknown: all zeros)."""

    column: int
    fill: str
    index: dict[str, int]

    @property
    def width(self) -> int:
        return len(self.index)


class CompiledPreprocessor:
    """The ColumnTransformer's fitted values applied with numpy; `transform(rows)` → float32 (n, width)."""

    def __init__(
        self, features: list[str], feature_dtypes: dict[str, str], parts: list[NumberPart | CategoryPart]
    ) -> None:
        self.features = features
        self.feature_dtypes = feature_dtypes
        self.parts = parts
        self.width = sum(p.width for p in parts)

    def transform(self, rows: list[Any]) -> np.ndarray:
        """Raw rows → the model's input, as `ColumnTransformer.transform(frame_from_rows(rows, ...))` gives it."""
        matrix = self._matrix(rows)
        if matrix is None:
            return self._from_frame(rows)
        out = np.zeros((len(matrix), self.width), dtype=np.float32)
        offset = 0
        for part in self.parts:
            if isinstance(part, NumberPart):
                values = self._numbers(matrix, part)
                if values is None:
                    return self._from_frame(rows)
                self._put_numbers(out, offset, part, values)
            else:
                column = [r[part.column] for r in matrix]
                if not set(map(type, column)) <= CATEGORY_TYPES:
                    return self._from_frame(rows)
                # As training.data.as_categories: None and NaN are missing, anything else is its text.
                texts = [None if v is None or v != v else str(v) for v in column]
                self._put_categories(out, offset, part, texts)
            offset += part.width
        return out

    def _matrix(self, rows: Any) -> list[Any] | None:
        """Rows as sequences in feature order, or None when a row needs training/rows.py's checks."""
        if not isinstance(rows, list):
            return None
        features, n = self.features, len(self.features)
        matrix: list[Any] = []
        try:
            for row in rows:
                if type(row) is dict:
                    matrix.append([row[f] for f in features])
                elif type(row) in (list, tuple) and len(row) == n:
                    matrix.append(row)
                else:
                    return None
        except KeyError:
            return None
        return matrix

    @staticmethod
    def _numbers(matrix: list[Any], part: NumberPart) -> np.ndarray | None:
        """The numeric columns as float64 (None → NaN), or None when a value is not a plain finite number."""
        columns = part.columns
        block = matrix if part.whole_row else [[r[j] for j in columns] for r in matrix]
        if not set(map(type, itertools.chain.from_iterable(block))) <= NUMBER_TYPES:
            return None
        try:
            values = np.array(block, dtype=np.float64).reshape(len(matrix), len(columns))
        except (OverflowError, ValueError):
            return None
        return None if np.isinf(values).any() else values

    def _from_frame(self, rows: Any) -> np.ndarray:
        """The slow path: frame_from_rows refuses what it refuses, and types the rest; then the same arithmetic."""
        frame = frame_from_rows(rows, self.features, self.feature_dtypes)
        out = np.zeros((len(frame), self.width), dtype=np.float32)
        offset = 0
        for part in self.parts:
            if isinstance(part, NumberPart):
                names = [self.features[j] for j in part.columns]
                self._put_numbers(out, offset, part, frame[names].to_numpy(dtype=np.float64))
            else:
                column = frame[self.features[part.column]].to_numpy(dtype=object)
                self._put_categories(out, offset, part, [v if isinstance(v, str) else None for v in column])
            offset += part.width
        return out

    @staticmethod
    def _put_numbers(out: np.ndarray, offset: int, part: NumberPart, values: np.ndarray) -> None:
        missing = np.isnan(values)
        if missing.any():
            values = np.where(missing, part.fill, values)
        if part.keep is not None:
            values = values[:, part.keep]
        # The same float64 operations in the same order as StandardScaler.transform, so the same bits.
        if part.mean is not None:
            values = values - part.mean
        if part.scale is not None:
            values = values / part.scale
        out[:, offset : offset + part.width] = values

    @staticmethod
    def _put_categories(out: np.ndarray, offset: int, part: CategoryPart, texts: list[str | None]) -> None:
        index, fill = part.index, part.fill
        for i, text in enumerate(texts):
            position = index.get(fill if text is None else text)
            if position is not None:  # an unknown category is all zeros, as handle_unknown="ignore" does
                out[i, offset + position] = 1.0


def compile_preprocessor(pre: Any, features: list[str], feature_dtypes: dict[str, str]) -> CompiledPreprocessor | None:
    """The compiled form of `pre`, checked against it on probe rows; None when it cannot be reproduced."""
    try:
        compiled = CompiledPreprocessor(features, feature_dtypes, _parts(pre, features, feature_dtypes))
        _check_probe(compiled, pre)
    except NotCompilable as exc:
        log.warning("preprocessing not compiled, the ColumnTransformer serves it: %s", exc)
        return None
    return compiled


def _parts(pre: Any, features: list[str], feature_dtypes: dict[str, str]) -> list[NumberPart | CategoryPart]:
    if not isinstance(pre, ColumnTransformer) or not hasattr(pre, "transformers_"):
        raise NotCompilable(f"expected a fitted ColumnTransformer, got {type(pre).__name__}")
    if getattr(pre, "sparse_output_", False):
        raise NotCompilable("the ColumnTransformer outputs a sparse matrix")
    position = {name: j for j, name in enumerate(features)}
    parts: list[NumberPart | CategoryPart] = []
    for name, transformer, columns in pre.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if (
            not isinstance(transformer, Pipeline)
            or isinstance(columns, slice)
            or not all(isinstance(c, str) and c in position for c in columns)
        ):
            raise NotCompilable(f"part {name!r} is not a pipeline over named feature columns")
        if not len(columns):
            continue
        dtypes = {feature_dtypes[c] for c in columns}
        if dtypes == {"number"}:
            parts.append(_number_part(name, transformer, [position[c] for c in columns], len(features)))
        elif dtypes == {"category"}:
            parts.extend(_category_parts(name, transformer, [position[c] for c in columns]))
        else:
            raise NotCompilable(f"part {name!r} mixes number and category columns")
    return parts


def _imputer(name: str, step: Any, strategies: tuple[str, ...]) -> SimpleImputer:
    if not isinstance(step, SimpleImputer) or step.strategy not in strategies or step.add_indicator:
        raise NotCompilable(f"part {name!r}: expected a SimpleImputer ({' or '.join(strategies)}) first")
    missing = step.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)):
        raise NotCompilable(f"part {name!r}: the imputer fills {missing!r}, not NaN")
    return step


def _number_part(name: str, pipeline: Pipeline, columns: list[int], n_features: int) -> NumberPart:
    steps = [step for _, step in pipeline.steps if step not in (None, "passthrough")]
    imputer = _imputer(name, steps[0] if steps else None, ("median", "mean", "most_frequent", "constant"))
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    empty = np.isnan(fill)
    keep = None
    if empty.any():  # the imputer drops columns that had no value in training (unless told to keep them)
        if imputer.keep_empty_features:
            raise NotCompilable(f"part {name!r}: the imputer keeps empty features")
        keep = np.flatnonzero(~empty)
    mean = scale = None
    for step in steps[1:]:
        if isinstance(step, StandardScaler) and mean is None and scale is None:
            mean = None if step.mean_ is None or not step.with_mean else np.asarray(step.mean_, dtype=np.float64)
            scale = None if step.scale_ is None or not step.with_std else np.asarray(step.scale_, dtype=np.float64)
        elif isinstance(step, FunctionTransformer) and step.func is np.float32:
            pass  # the output is float32 anyway
        else:
            raise NotCompilable(f"part {name!r}: step {type(step).__name__} is not compiled")
    return NumberPart(columns, columns == list(range(n_features)), fill, keep, mean, scale)


def _category_parts(name: str, pipeline: Pipeline, columns: list[int]) -> list[CategoryPart]:
    steps = [step for _, step in pipeline.steps if step not in (None, "passthrough")]
    if len(steps) != 2 or not isinstance(steps[1], OneHotEncoder):
        raise NotCompilable(f"part {name!r}: expected an imputer then a OneHotEncoder")
    imputer = _imputer(name, steps[0], ("most_frequent", "constant"))
    encoder = steps[1]
    if (
        encoder.handle_unknown != "ignore"
        or encoder.drop_idx_ is not None
        or getattr(encoder, "_infrequent_enabled", False)
    ):
        raise NotCompilable(f"part {name!r}: the OneHotEncoder drops, groups or refuses categories")
    fills = list(imputer.statistics_)
    if len(fills) != len(columns) or len(encoder.categories_) != len(columns):
        raise NotCompilable(f"part {name!r}: the imputer dropped an empty column")
    parts = []
    for column, fill, categories in zip(columns, fills, encoder.categories_, strict=True):
        values = list(categories)
        if not isinstance(fill, str) or not all(isinstance(v, str) for v in values):
            raise NotCompilable(f"part {name!r}: categories that are not text")
        parts.append(CategoryPart(column, fill, {v: i for i, v in enumerate(values)}))
    return parts


def _check_probe(compiled: CompiledPreprocessor, pre: Any) -> None:
    """Both paths on rows that touch every step: all missing, the fill values, unknown categories, odd numbers."""
    n = len(compiled.features)
    probe: list[list[Any]] = [[None] * n, [None] * n, [None] * n]
    for part in compiled.parts:
        if isinstance(part, NumberPart):
            for k, j in enumerate(part.columns):
                fill = float(part.fill[k]) if not np.isnan(part.fill[k]) else 0.0
                probe[1][j], probe[2][j] = fill, 2.5 * fill - 1.25
        else:
            probe[1][part.column] = next(iter(part.index), None)
            probe[2][part.column] = UNKNOWN_PROBE
    expected = np.asarray(
        pre.transform(frame_from_rows(probe, compiled.features, compiled.feature_dtypes)), dtype=np.float32
    )
    got = compiled.transform(probe)
    if expected.shape != got.shape or not np.allclose(got, expected, rtol=PROBE_RTOL, atol=1e-7):
        raise NotCompilable("it gives other outputs than the ColumnTransformer on the probe rows")
