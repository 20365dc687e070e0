"""Raw prediction rows → a typed DataFrame the saved preprocessor accepts, refusing bad rows by index and column.

Rows arrive as JSON: objects keyed by feature, or arrays in the manifest's feature order. The conversion is one
vectorised step per column; the slow per-value path runs only to name the value that is wrong.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from training.data import as_categories
from training.errors import InvalidInput


def _bad_number(value: Any) -> str | None:
    """Why `value` cannot fill a "number" feature, or None when it can (None/NaN are gaps the imputer fills)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return f"expected a number, got the boolean {value!r}"
    if isinstance(value, int | float | np.integer | np.floating):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        return None if not math.isinf(number) else f"expected a finite number, got {value!r}"
    if isinstance(value, str):
        return f"expected a number, got the string {value!r}; send numbers unquoted"
    return f"expected a number, got a {type(value).__name__}"


def _number_column(values: list[Any], name: str) -> np.ndarray:
    try:
        if {type(v) for v in values} <= {int, float, type(None)}:  # plain JSON numbers: one C-level conversion
            column = np.array(values, dtype=np.float64)
            if not np.isinf(column).any():
                return column
    except OverflowError:
        pass
    for i, v in enumerate(values):  # the slow path only runs to say which value is wrong
        if (why := _bad_number(v)) is not None:
            raise InvalidInput(f"row {i}, feature {name!r}: {why}", row=i, column=name)
    return np.array(values, dtype=np.float64)


def frame_from_rows(rows: list[Any], features: list[str], feature_dtypes: dict[str, str]) -> pd.DataFrame:
    """Raw prediction rows → a DataFrame in `features` order, typed the way prepare typed the training frame.

    A row is a dict keyed by feature (extra keys are ignored) or a list in `features` order. None (or NaN) means
    "missing": the preprocessor imputes it with the training median / most frequent category.
    """
    if not isinstance(rows, list):
        raise InvalidInput(f"inputs must be a list of rows, got {type(rows).__name__}")
    n = len(features)
    matrix: list[Any] = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            missing = next((f for f in features if f not in row), None)
            if missing is not None:
                raise InvalidInput(
                    f"row {i} has no value for feature {missing!r}; each row needs: {', '.join(features)}",
                    row=i,
                    column=missing,
                )
            matrix.append([row[f] for f in features])
        elif isinstance(row, list | tuple):
            if len(row) != n:
                raise InvalidInput(
                    f"row {i} has {len(row)} values; expected {n}, in this order: {', '.join(features)}", row=i
                )
            matrix.append(row)
        else:
            raise InvalidInput(
                f"row {i} is a {type(row).__name__}; expected an object keyed by feature name or a list of {n} values",
                row=i,
            )
    columns: dict[str, Any] = {}
    for j, name in enumerate(features):
        values = [r[j] for r in matrix]
        if feature_dtypes[name] == "number":
            columns[name] = _number_column(values, name)
        else:
            for i, v in enumerate(values):
                if v is not None and not isinstance(v, str | int | float | bool | np.generic):
                    raise InvalidInput(
                        f"row {i}, feature {name!r}: expected a single value (text or number), "
                        f"got a {type(v).__name__}",
                        row=i,
                        column=name,
                    )
            columns[name] = as_categories(values)
    return pd.DataFrame(columns, columns=features)
