"""Score one chunk of CSV rows with a Predictor: one vectorised call for every row that can be scored.

Cells arrive as text. A `number` feature's cells are parsed as numbers and a `category` feature's are kept as
text, which is what an online request carrying the same row as JSON numbers and strings gets; the values pandas
reads as missing (`""`, `NA`, `null`, …) are missing, and the model's preprocessing imputes them, as online.

A row that cannot be scored (a number feature holding text or an infinity, or a row the preprocessing refuses)
does not fail the job: its `error` cell says why and its prediction cells stay empty. Cells are checked column by
column before the model runs; if the Predictor still refuses the rows, they are split in halves until the
refused ones are found, so one bad row costs a few extra calls, never one call per row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from store.batch_format import PROBA_DIGITS, ChunkResult, OutputColumns
from store.datasets import NA_VALUES
from training.errors import MLQError
from training.predictor import Predictor

_ROW_PREFIX = re.compile(r"^row \d+,?\s*")


def _number_column(cells: list[str | None], name: str, errors: dict[int, str]) -> list[float]:
    """The cells as floats (NaN where missing); a cell that is no finite number is an error of its row."""
    values: list[Any] = [np.nan if c is None else c for c in cells]
    try:
        column = np.array(values, dtype=np.float64)
    except ValueError:  # some cell is not a number: find which, one by one
        column = np.empty(len(values))
        for i, v in enumerate(values):
            try:
                column[i] = float(v)
            except ValueError:
                column[i] = np.nan
                errors.setdefault(i, f"feature {name!r}: expected a number, got {v!r}")
    for bad in np.flatnonzero(np.isinf(column)).tolist():
        errors.setdefault(bad, f"feature {name!r}: expected a finite number, got {cells[bad]!r}")
    return list(column.tolist())


def feature_rows(
    records: list[list[str]], positions: dict[str, int], predictor: Predictor, errors: dict[int, str]
) -> list[list[Any]]:
    """The chunk's rows in the model's feature order, typed as an online request would carry them."""
    columns: list[list[Any]] = []
    width = max(positions.values()) + 1
    for i, record in enumerate(records):
        if len(record) < width:  # the upload checks field counts; a file changed since then is caught here
            errors.setdefault(i, f"the row has {len(record)} fields, fewer than the header")
    for name in predictor.features:
        pos = positions[name]
        cells = [r[pos] if pos < len(r) and r[pos] not in NA_VALUES else None for r in records]
        if predictor.feature_dtypes.get(name) == "number":
            columns.append(_number_column(cells, name, errors))
        else:
            columns.append(cells)
    return [list(row) for row in zip(*columns, strict=True)]


def _score(
    predictor: Predictor, rows: list[list[Any]], index: list[int], errors: dict[int, str]
) -> list[tuple[list[int], np.ndarray]]:
    """(row indexes, their scores) pieces; rows the Predictor refuses even alone go to `errors`."""
    try:
        return [(index, predictor.scores(rows))]
    except (MLQError, ValueError, TypeError) as exc:
        if len(rows) == 1:
            message = exc.message if isinstance(exc, MLQError) else str(exc)
            errors[index[0]] = _ROW_PREFIX.sub("", message) or type(exc).__name__
            return []
        mid = len(rows) // 2
        return _score(predictor, rows[:mid], index[:mid], errors) + _score(predictor, rows[mid:], index[mid:], errors)


def score_chunk(
    predictor: Predictor,
    records: list[list[str]],
    positions: dict[str, int],
    columns: OutputColumns,
    on_scored: Callable[[list[list[Any]], np.ndarray], None] | None = None,
) -> ChunkResult:
    """The output columns of one chunk: passthrough cells, predictions, and an error for each unscorable row.
    `on_scored(rows, scores)` sees each piece of rows that was scored (the drift tally counts them)."""
    errors: dict[int, str] = {}
    rows = feature_rows(records, positions, predictor, errors)
    passthrough = [
        [r[positions[name]] if positions[name] < len(r) else "" for r in records] for name in columns.passthrough
    ]
    result = ChunkResult(columns, passthrough, len(records))
    good = [i for i in range(len(records)) if i not in errors]
    for index, scores in _score(predictor, [rows[i] for i in good], good, errors) if good else []:
        _fill(result, index, scores)
        if on_scored is not None:
            on_scored([rows[i] for i in index], scores)
    for i, message in errors.items():
        result.errors[i] = message
    return result


def _fill(result: ChunkResult, index: list[int], scores: np.ndarray) -> None:
    columns = result.columns
    if not columns.classification:
        for i, value in zip(index, scores.tolist(), strict=True):
            result.values[i] = value
        return
    # The label is the most probable class, the first one on a tie: as online (a stable sort, descending).
    best = np.argmax(scores, axis=1).tolist()
    if columns.label:
        for i, k in zip(index, best, strict=True):
            result.labels[i] = columns.classes[k]
    if columns.proba:
        rounded = np.round(scores, PROBA_DIGITS)
        for j, target in enumerate(result.proba):
            for i, p in zip(index, rounded[:, j].tolist(), strict=True):
                target[i] = p
