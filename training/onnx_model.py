"""An uploaded ONNX graph run by onnxruntime on raw rows: the part of serving that the upload check shares.

Three input layouts, decided at upload (training/onnx_check.py) and recorded in the manifest's `onnx.layout`:
- `tensor`: one 2-D numeric input `[n, F]`; the rows' F named features, stacked in order;
- `columns`: one input per feature, `[n, 1]` or `[n]`, numeric or string (mlqueue's own exports have this
  shape: a gap is NaN in a numeric column and "" in a string one);
- `text`: one text column, tokenized (training/onnx_text.py) into input_ids / attention_mask / token_type_ids,
  one run per length bucket.
Nothing here imports torch, scikit-learn or pandas: the upload check runs it in a process of its own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from training.errors import InvalidInput
from training.onnx_text import buckets, encode, feed, load_tokenizer

# ONNX tensor element types (TensorProto.DataType names, lower case) → numpy.
NUMPY_TYPES: dict[str, Any] = {
    "float": np.float32,
    "double": np.float64,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
    "string": np.object_,
}
INTEGER_TYPES = ("int64", "int32", "int16", "int8", "uint8")


def _number(value: Any, i: int, name: str, gaps: bool) -> float:
    if value is None and gaps:
        return math.nan  # a gap, as mlqueue's own exports read it (their imputer is in the graph)
    if isinstance(value, bool) or not isinstance(value, int | float):
        got = "nothing" if value is None else f"{type(value).__name__} {value!r}"
        raise InvalidInput(f"row {i}, feature {name!r}: expected a number, got {got}", row=i, column=name)
    if not math.isfinite(value):
        raise InvalidInput(f"row {i}, feature {name!r}: expected a finite number, got {value!r}", row=i, column=name)
    return float(value)


def _string(value: Any, i: int, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidInput(f"row {i}, feature {name!r}: expected text, got {type(value).__name__}", row=i, column=name)


def table(rows: Any, features: list[str]) -> list[list[Any]]:
    """The rows (objects keyed by feature, or lists in feature order) as lists in feature order."""
    if not isinstance(rows, list):
        raise InvalidInput(f"inputs must be a list of rows, got {type(rows).__name__}")
    out: list[list[Any]] = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            missing = next((f for f in features if f not in row), None)
            if missing is not None:
                raise InvalidInput(
                    f"row {i} has no value for feature {missing!r}; each row needs: {', '.join(features)}",
                    row=i,
                    column=missing,
                )
            out.append([row[f] for f in features])
        elif isinstance(row, list) and len(row) == len(features):
            out.append(row)
        else:
            raise InvalidInput(
                f"row {i}: expected an object keyed by feature name or a list of {len(features)} values in this "
                f"order: {', '.join(features)}",
                row=i,
            )
    return out


class OnnxModel:
    """One ONNX file on one onnxruntime session, fed raw rows the way the manifest's `onnx` spec says."""

    def __init__(
        self, directory: Path, spec: dict[str, Any], features: list[str], *, providers: list[Any], threads: int
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: a warning per session would flood the worker's log
        self.session = ort.InferenceSession(str(directory / spec["file"]), options, providers=providers)
        self.spec = spec
        self.layout: str = spec["layout"]
        self.output: str = spec["output"]
        self.features = features
        self.types = {i["name"]: i["type"] for i in spec["inputs"]}
        self.ranks = {i["name"]: len(i["shape"]) for i in spec["inputs"]}
        self.one_row = spec.get("batch") == 1
        self.tokenizer = None
        if self.layout == "text":
            text = spec["text"]
            self.tokenizer = load_tokenizer(directory / text["tokenizer_file"], int(text["max_length"]))
            self.pad_id = int(text["pad_id"])
            self.text_inputs = {name: np.dtype(NUMPY_TYPES[self.types[name]]).name for name in self.types}

    def outputs(self, rows: Any) -> tuple[np.ndarray, list[bool] | None]:
        """The chosen output for `rows`, as float64 with one row per input row; for text, which were truncated."""
        table_rows = table(rows, self.features)
        if not table_rows:
            return np.zeros((0,)), [] if self.layout == "text" else None
        if self.layout == "text":
            return self._text([r[0] for r in table_rows])
        return self._run_rows(self._numeric(table_rows)), None

    def _fast(self, rows: list[list[Any]], gaps: bool) -> np.ndarray | None:
        """All the rows as one float64 matrix in one C-level conversion, when every value is a plain JSON number
        (None too, where a gap is allowed); None otherwise, and the per-value path below names the bad one."""
        allowed = {int, float, type(None)} if gaps else {int, float}
        if not {type(v) for r in rows for v in r} <= allowed:
            return None
        try:
            matrix = np.array(rows, dtype=np.float64)
        except (OverflowError, ValueError):
            return None
        return None if np.isinf(matrix).any() or (not gaps and np.isnan(matrix).any()) else matrix

    def _numeric(self, rows: list[list[Any]]) -> dict[str, np.ndarray]:
        if self.layout == "tensor" and (fast := self._fast(rows, False)) is not None:
            (name,) = self.types
            return {name: fast.astype(NUMPY_TYPES[self.types[name]])}
        floats = self.layout == "columns" and all(
            self.types[f] in ("float", "double", "float16") for f in self.features
        )
        if floats and (fast := self._fast(rows, True)) is not None:
            return {
                name: (col.reshape(-1, 1) if self.ranks[name] == 2 else col).astype(NUMPY_TYPES[self.types[name]])
                for name, col in zip(self.features, fast.T, strict=True)
            }
        if self.layout == "tensor":
            (name,) = self.types
            matrix = [
                [_number(v, i, f, False) for v, f in zip(r, self.features, strict=True)] for i, r in enumerate(rows)
            ]
            return {name: np.asarray(matrix, dtype=NUMPY_TYPES[self.types[name]])}
        feeds: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.features):
            kind = self.types[name]
            if kind == "string":
                column: np.ndarray = np.array([_string(r[j], i, name) for i, r in enumerate(rows)], dtype=object)
            else:
                gaps = kind not in INTEGER_TYPES
                column = np.asarray([_number(r[j], i, name, gaps) for i, r in enumerate(rows)])
                if kind in INTEGER_TYPES and not np.all(column == np.round(column)):
                    bad = int(np.flatnonzero(column != np.round(column))[0])
                    raise InvalidInput(f"row {bad}, feature {name!r}: expected an integer", row=bad, column=name)
                column = column.astype(NUMPY_TYPES[kind])
            feeds[name] = column.reshape(-1, 1) if self.ranks[name] == 2 else column
        return feeds

    def _run_rows(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if not self.one_row:
            return self._run(feeds)
        n = len(next(iter(feeds.values())))
        parts = [self._run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(n)]
        return np.concatenate(parts)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (out,) = self.session.run([self.output], feeds)
        array = np.asarray(out, dtype=np.float64)
        return array.reshape(len(array), -1) if array.ndim > 2 else array

    def _text(self, texts: list[Any]) -> tuple[np.ndarray, list[bool]]:
        column = self.features[0]
        for i, value in enumerate(texts):
            if not isinstance(value, str):
                got = "nothing" if value is None else type(value).__name__
                raise InvalidInput(f"row {i}, column {column!r}: expected text, got {got}", row=i, column=column)
        assert self.tokenizer is not None
        ids, truncated = encode(self.tokenizer, texts)
        pieces: list[tuple[list[int], np.ndarray]] = []
        for group in buckets([len(r) for r in ids]):
            rows = [ids[i] for i in group]
            if self.one_row:
                out = np.concatenate([self._run(feed([r], self.pad_id, self.text_inputs)) for r in rows])
            else:
                out = self._run(feed(rows, self.pad_id, self.text_inputs))
            pieces.append((group, out))
        result = np.empty((len(texts), *pieces[0][1].shape[1:]), dtype=np.float64)
        for group, out in pieces:
            result[group] = out
        return result, truncated


def providers_for(device: str, available: list[str]) -> list[Any]:
    """onnxruntime's execution providers for a device: CUDA on a GPU when onnxruntime-gpu has it, else the CPU."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def to_scores(raw: np.ndarray, task: str, output_kind: str) -> np.ndarray:
    """Class probabilities (n, K) from probabilities or logits; regression values (n,) from (n,) or (n, 1)."""
    if task != "classification":
        return raw.reshape(len(raw))
    if output_kind == "logits":
        shifted = raw - raw.max(axis=1, keepdims=True)  # the max subtracted: exp never overflows
        exp = np.exp(shifted)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))
    return raw
