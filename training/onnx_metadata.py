"""The metadata of an uploaded ONNX model, checked for shape before anything runs. Stdlib only (the API imports it).

The metadata says what the graph alone cannot: whether the model classifies or regresses, its labels, which output
holds the answer and whether that output is probabilities or logits, the names of the feature columns a 2-D input
stands for, or the text column a Transformer reads (with its maximum sequence length). Everything that depends on
the graph itself (its inputs, outputs, widths) is checked by training/onnx_check.py in a separate process.
"""

from __future__ import annotations

import re
from typing import Any

from training.errors import InvalidModel

TASKS = ("classification", "regression")
OUTPUT_KINDS = ("probabilities", "logits")
MAX_SEQUENCE = 8192
MAX_LABELS = 10_000
KEYS = ("task", "labels", "output", "output_kind", "features", "text", "max_length", "batch")
# An uploaded file's own name: plain, never a path; the names mlqueue writes itself are taken.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
RESERVED_FILES = (MODEL_FILE, TOKENIZER_FILE, "manifest.json")


def _fail(key: str, message: str) -> InvalidModel:
    return InvalidModel(f"metadata.{key}: {message}", ["metadata", key])


def _names(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, "expected a non-empty list of non-empty strings")
    if len(set(value)) != len(value):
        raise _fail(key, "names must be unique")
    return list(value)


def check_metadata(raw: object) -> dict[str, Any]:
    """The metadata as a dict of known keys with checked types; InvalidModel naming `metadata.<key>` otherwise."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidModel('metadata: expected a JSON object such as {"task": "classification"}', ["metadata"])
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise _fail(unknown[0], f"unknown key; the keys are {', '.join(KEYS)}")
    out: dict[str, Any] = {}
    if "task" in raw:
        if raw["task"] not in TASKS:
            raise _fail("task", f"expected one of {', '.join(TASKS)}, got {raw['task']!r}")
        out["task"] = raw["task"]
    if "labels" in raw:
        labels = raw["labels"]
        ok = isinstance(labels, list) and 0 < len(labels) <= MAX_LABELS
        if not ok or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in labels):
            raise _fail("labels", f"expected a list of 1 to {MAX_LABELS} strings or integers")
        if len(set(labels)) != len(labels):
            raise _fail("labels", "labels must be unique")
        if raw.get("task") == "regression":
            raise _fail("labels", "a regression model has no labels; drop them or set task to classification")
        out["labels"] = labels
    for key in ("output", "text"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise _fail(key, "expected a non-empty string")
            out[key] = raw[key]
    if "output_kind" in raw:
        if raw["output_kind"] not in OUTPUT_KINDS:
            raise _fail("output_kind", f"expected one of {', '.join(OUTPUT_KINDS)}, got {raw['output_kind']!r}")
        out["output_kind"] = raw["output_kind"]
    if "features" in raw:
        if "text" in raw:
            raise _fail("features", "a text model reads one text column (metadata.text); drop features")
        out["features"] = _names(raw["features"], "features")
    if "max_length" in raw:
        length = raw["max_length"]
        if "text" not in raw:
            raise _fail("max_length", "only a text model (metadata.text) has a maximum sequence length")
        if not isinstance(length, int) or isinstance(length, bool) or not 2 <= length <= MAX_SEQUENCE:
            raise _fail("max_length", f"expected an integer from 2 to {MAX_SEQUENCE}, got {length!r}")
        out["max_length"] = length
    if "batch" in raw:
        if raw["batch"] != 1 or isinstance(raw["batch"], bool):
            raise _fail("batch", "the only value is 1 (a graph whose batch dimension is fixed at 1); omit it else")
        out["batch"] = 1
    return out


def check_file_name(name: str | None, field: str) -> str:
    """An external data file's name as uploaded: a plain file name, never a path, not one mlqueue writes."""
    if not name or not FILE_NAME_RE.fullmatch(name) or name in RESERVED_FILES:
        raise InvalidModel(
            f"{field}: file name {name!r} must be a plain name (letters, digits, '.', '_', '-'; no path) and not "
            f"one of {', '.join(RESERVED_FILES)}",
            [field],
        )
    return name
