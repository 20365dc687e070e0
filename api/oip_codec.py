"""Open Inference Protocol tensors ⇄ mlqueue rows and predictions; stdlib only (the API stays numpy-free).

Requests come as JSON (`data` nested or flat, row-major) or with Triton's binary tensor extension: the body is a
JSON header of `Inference-Header-Content-Length` bytes followed by each input's raw bytes, in input order, sized
by the input's `binary_data_size` parameter. Numbers are little-endian; a BYTES element is a 4-byte little-endian
length and then its bytes. Binary numbers are read with `struct` (one C call per tensor).

A model's inputs are its features: one tensor per feature column, shape [n] or [n, 1] (BYTES for a categorical
feature), or, for a model whose features are all numeric, one tensor named `input` of shape [n, features].
Outputs: a classifier's `label` (BYTES, or INT64 when every class is an integer) and `probabilities` (FP64,
[n, classes] in the manifest's class order); a regressor's `prediction` (FP64, [n]).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import orjson

from training.errors import InvalidInput

# datatype → struct code and size of one element
NUMERIC = {
    "BOOL": ("?", 1),
    "UINT8": ("B", 1),
    "UINT16": ("H", 2),
    "UINT32": ("I", 4),
    "UINT64": ("Q", 8),
    "INT8": ("b", 1),
    "INT16": ("h", 2),
    "INT32": ("i", 4),
    "INT64": ("q", 8),
    "FP16": ("e", 2),
    "FP32": ("f", 4),
    "FP64": ("d", 8),
}
DATATYPES = (*NUMERIC, "BYTES")
MATRIX_INPUT = "input"  # the one [n, features] tensor of an all-numeric model
CLASS_OUTPUTS = ("label", "probabilities")
REGRESSION_OUTPUTS = ("prediction",)


class BadTensor(InvalidInput):
    """Raised when an inference request's tensors do not match the model's inputs (name, shape, datatype, size)."""

    code = "invalid_tensor"
    status = 400


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """(the JSON request, the binary data after it) of a request body; `header_length` is the value of the
    Inference-Header-Content-Length header, None for a plain JSON body."""
    if header_length is None:
        size = len(body)
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise BadTensor(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 < size <= len(body):
            raise BadTensor(
                f"Inference-Header-Content-Length is {size} but the body has {len(body)} bytes; it must give the "
                "size of the JSON header at the start of the body"
            )
    try:
        request = orjson.loads(body[:size])
    except orjson.JSONDecodeError as exc:
        raise BadTensor(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadTensor("the inference request must be a JSON object with an `inputs` list")
    return request, memoryview(body)[size:]


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    for x in data:
        out.extend(_flatten(x))
    return out


def _shape(spec: dict[str, Any], where: str) -> list[int]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise BadTensor(f"{where}: `shape` must be a list of non-negative integers, got {shape!r}")
    return shape


def _binary_values(spec: dict[str, Any], datatype: str, count: int, binary: memoryview, offset: int, where: str) -> Any:
    size = spec["parameters"]["binary_data_size"]
    if type(size) is not int or size < 0 or offset + size > len(binary):
        raise BadTensor(
            f"{where}: binary_data_size {size!r} runs past the end of the body ({len(binary) - offset} bytes left "
            "after the JSON header)"
        )
    chunk = binary[offset : offset + size]
    if datatype == "BYTES":
        values, pos = [], 0
        while pos < size:
            if pos + 4 > size:
                raise BadTensor(f"{where}: a BYTES element's 4-byte length is cut off")
            (length,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + length > size:
                raise BadTensor(f"{where}: a BYTES element of {length} bytes runs past binary_data_size {size}")
            values.append(bytes(chunk[pos : pos + length]))
            pos += length
        if len(values) != count:
            raise BadTensor(f"{where}: binary data holds {len(values)} BYTES elements, its shape says {count}")
        return values
    code, width = NUMERIC[datatype]
    if size != count * width:
        raise BadTensor(
            f"{where}: binary_data_size is {size} bytes, but shape and datatype {datatype} need {count * width}"
        )
    return struct.unpack_from(f"<{count}{code}", chunk)


def read_tensors(request: dict[str, Any], binary: memoryview) -> dict[str, tuple[list[int], str, Any]]:
    """{name: (shape, datatype, flat values)} of the request's inputs, every size checked against its shape."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadTensor("`inputs` must be a non-empty list of tensors {name, shape, datatype, data}")
    tensors: dict[str, tuple[list[int], str, Any]] = {}
    offset = 0
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadTensor(f"inputs[{i}] must be an object with a string `name`")
        name = spec["name"]
        where = f"input {name!r}"
        if name in tensors:
            raise BadTensor(f"{where} is given twice")
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            raise BadTensor(f"{where}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
        shape = _shape(spec, where)
        count = math.prod(shape)
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadTensor(f"{where}: `parameters` must be an object")
        if "binary_data_size" in params:
            values = _binary_values(spec, datatype, count, binary, offset, where)
            offset += params["binary_data_size"]
        elif "data" in spec:
            values = _flatten(spec["data"])
            if len(values) != count:
                raise BadTensor(f"{where}: `data` holds {len(values)} elements, its shape {shape} says {count}")
            _check_json_values(values, datatype, where)
        else:
            raise BadTensor(f"{where} has neither `data` nor a `binary_data_size` parameter")
        tensors[name] = (shape, datatype, values)
    if offset != len(binary):
        raise BadTensor(
            f"the body has {len(binary)} bytes of binary data after the JSON header, the inputs' binary_data_size "
            f"parameters add up to {offset}"
        )
    return tensors


def _check_json_values(values: list[Any], datatype: str, where: str) -> None:
    if datatype == "BYTES":
        bad = next((v for v in values if not isinstance(v, str)), None)
        if bad is not None:
            raise BadTensor(f"{where}: a BYTES tensor's data must be strings, got {bad!r}")
    elif datatype == "BOOL":
        bad = next((v for v in values if not isinstance(v, bool)), None)
        if bad is not None:
            raise BadTensor(f"{where}: a BOOL tensor's data must be true or false, got {bad!r}")
    elif not set(map(type, values)) <= {int, float}:  # one C-level pass; the loop below only names the culprit
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, int | float)), None)
        raise BadTensor(f"{where}: a {datatype} tensor's data must be numbers, got {bad!r}")


def _number(value: Any, where: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return None  # NaN is a missing value: the model's preprocessing imputes it, as a JSON null in /v1
        raise BadTensor(f"{where}: values must be finite, got {value}")
    return value


def _numbers(values: Any, where: str) -> list[Any]:
    """The values as a list, NaN as None, refusing ±inf; their sum (one C loop) is finite in the common case."""
    total = sum(values)
    if isinstance(total, float) and not math.isfinite(total):
        return [_number(v, where) for v in values]
    return values if isinstance(values, list) else list(values)


def rows_from_tensors(
    tensors: dict[str, tuple[list[int], str, Any]], names: list[str], dtypes: dict[str, str]
) -> list[list[Any]]:
    """Rows in the manifest's feature order, from one tensor per feature or one [n, features] matrix. Every value
    is what /v1's row check (api.predict.check_rows) accepts: numbers (at most 64-bit) for numeric features."""
    numeric = all(dtypes.get(n) == "number" for n in names)
    if set(tensors) == {MATRIX_INPUT} and MATRIX_INPUT not in names:
        if not numeric:
            raise BadTensor(
                f"input {MATRIX_INPUT!r}: a single [n, features] tensor only serves a model whose features are all "
                f"numeric; send one tensor per feature instead: {', '.join(names)}"
            )
        shape, datatype, values = tensors[MATRIX_INPUT]
        where = f"input {MATRIX_INPUT!r}"
        if len(shape) != 2 or shape[1] != len(names):
            raise BadTensor(f"{where}: shape must be [n, {len(names)}] (rows, features), got {shape}")
        if datatype not in NUMERIC or datatype == "BOOL":
            raise BadTensor(f"{where}: datatype must be numeric (FP32, FP64, INT64, ...), got {datatype}")
        width = len(names)
        flat = _numbers(values, where)
        return [flat[i : i + width] for i in range(0, len(flat), width)]
    missing = [n for n in names if n not in tensors]
    unknown = [n for n in tensors if n not in names]
    if missing or unknown:
        parts = []
        if unknown:
            parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        hint = f"; or one [n, {len(names)}] tensor named {MATRIX_INPUT!r}" if numeric else ""
        raise BadTensor(f"{'; '.join(parts)}: the model takes one tensor per feature, named {', '.join(names)}{hint}")
    n = None
    columns = []
    for name in names:
        shape, datatype, values = tensors[name]
        where = f"input {name!r}"
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise BadTensor(f"{where}: shape must be [n] or [n, 1] (one value per row), got {shape}")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise BadTensor(f"{where}: has {shape[0]} rows, the inputs before it have {n}; every input needs one")
        if dtypes.get(name) == "number":
            if datatype == "BYTES" or datatype == "BOOL":
                raise BadTensor(
                    f"{where}: feature {name!r} is numeric; send FP32, FP64 or an integer type, not {datatype}"
                )
            columns.append(_numbers(values, where))
        elif datatype == "BYTES":
            columns.append([_text(v, where) for v in values])
        else:
            columns.append(list(values))
    return [list(row) for row in zip(*columns, strict=True)]


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        raise BadTensor(f"{where}: BYTES elements must be UTF-8 text") from None


# ---- responses ----------------------------------------------------------------------------------------------


def output_tensors(predictions: list[dict[str, Any]], task: str, classes: list[Any]) -> list[dict[str, Any]]:
    """The response's output tensors (with `data`) from a job's predictions (postprocess output "both")."""
    n = len(predictions)
    if task != "classification":
        return [{"name": "prediction", "datatype": "FP64", "shape": [n], "data": [p["value"] for p in predictions]}]
    integer = bool(classes) and all(type(c) is int for c in classes)
    labels = [p["label"] for p in predictions]
    keys = [c if isinstance(c, str) else orjson.dumps(c).decode() for c in classes]  # proba keys (training._key)
    proba = [p["proba"].get(k, 0.0) for p in predictions for k in keys]
    return [
        {
            "name": "label",
            "datatype": "INT64" if integer else "BYTES",
            "shape": [n],
            "data": labels if integer else [str(x) for x in labels],
        },
        {"name": "probabilities", "datatype": "FP64", "shape": [n, len(classes)], "data": proba},
    ]


def model_outputs(task: str, classes: list[Any]) -> list[dict[str, Any]]:
    """The metadata of the outputs `output_tensors` produces."""
    if task != "classification":
        return [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    integer = bool(classes) and all(type(c) is int for c in classes)
    return [
        {"name": "label", "datatype": "INT64" if integer else "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)]},
    ]


def requested_outputs(request: dict[str, Any], available: list[str]) -> dict[str, bool]:
    """{output name: as binary} for what the request asks (all outputs when it names none)."""
    params = request.get("parameters") or {}
    default_binary = isinstance(params, dict) and params.get("binary_data_output") is True
    asked = request.get("outputs")
    if asked is None:
        return {name: default_binary for name in available}
    if not isinstance(asked, list):
        raise BadTensor("`outputs` must be a list of {name, parameters}")
    out: dict[str, bool] = {}
    for i, spec in enumerate(asked):
        if not isinstance(spec, dict) or spec.get("name") not in available:
            name = spec.get("name") if isinstance(spec, dict) else spec
            raise BadTensor(f"outputs[{i}]: unknown output {name!r}; this model's outputs are {', '.join(available)}")
        p = spec.get("parameters") or {}
        out[spec["name"]] = bool(p.get("binary_data", default_binary)) if isinstance(p, dict) else default_binary
    return out


def _pack(tensor: dict[str, Any]) -> bytes:
    data = tensor["data"]
    if tensor["datatype"] == "BYTES":
        parts = []
        for value in data:
            raw = value.encode() if isinstance(value, str) else bytes(value)
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    code, _ = NUMERIC[tensor["datatype"]]
    return struct.pack(f"<{len(data)}{code}", *data)


def encode_response(
    response: dict[str, Any], outputs: list[dict[str, Any]], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None) of an inference response; outputs asked as binary follow the header."""
    blobs: list[bytes] = []
    listed = []
    for tensor in outputs:
        if tensor["name"] not in binary:
            continue
        if binary[tensor["name"]]:
            blob = _pack(tensor)
            blobs.append(blob)
            tensor = {k: v for k, v in tensor.items() if k != "data"}
            tensor["parameters"] = {"binary_data_size": len(blob)}
        listed.append(tensor)
    header = orjson.dumps({**response, "outputs": listed})
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
