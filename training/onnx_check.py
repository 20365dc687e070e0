"""The checks an uploaded ONNX model passes before it is stored, run as `python -m training.onnx_check DIR META`.

The API never imports onnx or onnxruntime (they bring numpy and protobuf into a process that stays light): it
starts this module in a process of its own, which also keeps a graph that crashes onnxruntime from taking the API
with it. In order: the file parses; external data, if any, names only sibling files of the upload; only the
standard operator domains, in a supported opset range; `onnx.checker`'s full check (with shape inference); a
dynamic batch dimension (or metadata `batch: 1`); inputs that match a layout and the metadata; the tokenizer of a
text model parses; one inference on generated rows through the same code that serves (training/onnx_model.py),
whose output fixes the task, labels and output kind. The last line on stdout is a JSON report: `{"ok": true,
"manifest": {...}}` or `{"ok": false, "error": {...}}` with the field at fault.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, external_data_helper

from training.errors import InvalidModel, MLQError
from training.onnx_metadata import MODEL_FILE, TOKENIZER_FILE
from training.onnx_model import NUMPY_TYPES, OnnxModel, to_scores
from training.onnx_text import TEXT_INPUTS, load_tokenizer, pad_id_of

STANDARD_DOMAINS = {"": (7, onnx.defs.onnx_opset_version()), "ai.onnx": (7, onnx.defs.onnx_opset_version())}
STANDARD_DOMAINS["ai.onnx.ml"] = (1, 5)
NUMERIC = tuple(t for t in NUMPY_TYPES if t not in ("string", "bool"))
NAMED_OUTPUTS = ("probabilities", "logits", "value", "variable", "output_probability", "scores")
SAMPLE_TEXTS = ["a short test", "a somewhat longer test sentence, to check that rows of two lengths can be batched"]
DEFAULT_MAX_LENGTH = 512


def _type_name(elem_type: int) -> str:
    return str(TensorProto.DataType.Name(elem_type)).lower()


def _describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
    """{"name", "type", "shape"}: a tensor's element type and its dims (an int, a symbolic name, or None)."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return {"name": value.name, "type": kind or "unknown", "shape": None}
    tensor = value.type.tensor_type
    dims: list[Any] = []
    for d in tensor.shape.dim:
        which = d.WhichOneof("value")
        dims.append(d.dim_value if which == "dim_value" else (d.dim_param or None))
    return {"name": value.name, "type": _type_name(tensor.elem_type), "shape": dims}


def _check_external_data(model: onnx.ModelProto, directory: Path) -> list[str]:
    used: set[str] = set()
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        plain = Path(location).name == location and location not in ("", ".", "..") and "\\" not in location
        if not plain or not (directory / location).is_file():
            raise InvalidModel(
                f"tensor {tensor.name!r} keeps its data in {location!r}; external data must be a file uploaded "
                "beside the model (field external_data) under that plain name, never a path",
                ["external_data"],
            )
        used.add(location)
    return sorted(used)


def _check_domains(model: onnx.ModelProto) -> dict[str, int]:
    local = {f.domain for f in model.functions}  # functions the file defines itself: no native code
    opsets: dict[str, int] = {}
    for entry in model.opset_import:
        domain = entry.domain
        if domain in local:
            continue
        if domain not in STANDARD_DOMAINS:
            raise InvalidModel(
                f"operator domain {domain!r} is not a standard ONNX domain; custom operators need native code that "
                f"mlqueue does not load. Allowed: '' (ai.onnx), ai.onnx.ml",
            )
        low, high = STANDARD_DOMAINS[domain]
        if not low <= entry.version <= high:
            raise InvalidModel(
                f"opset {entry.version} of domain {domain or 'ai.onnx'!r} is outside the supported range "
                f"{low}..{high}; export with an opset in that range"
            )
        opsets[domain or "ai.onnx"] = int(entry.version)
    graphs = [model.graph]
    for node in (n for g in graphs for n in g.node):
        if node.domain not in STANDARD_DOMAINS and node.domain not in local:
            raise InvalidModel(f"node {node.name or node.op_type!r} uses the custom-op domain {node.domain!r}")
    return opsets


def _layout(inputs: list[dict[str, Any]], meta: dict[str, Any], tokenizer: bool) -> tuple[str, list[dict[str, str]]]:
    """The input layout and the feature columns (name, dtype) the rows carry."""
    names = [i["name"] for i in inputs]
    if "text" in meta:
        if not tokenizer:
            raise InvalidModel(
                "a text model (metadata.text) needs its tokenizer.json in the field 'tokenizer'", ["tokenizer"]
            )
        odd = [i["name"] for i in inputs if i["name"] not in TEXT_INPUTS or i["type"] not in NUMERIC]
        if odd or "input_ids" not in names or any(len(i["shape"] or []) != 2 for i in inputs):
            raise InvalidModel(
                f"metadata.text: a text model's inputs must be 2-D integer input_ids (and optionally attention_mask, "
                f"token_type_ids); the graph has {', '.join(names)}",
                ["metadata", "text"],
            )
        return "text", [{"name": meta["text"], "dtype": "text"}]
    if tokenizer:
        raise InvalidModel("a tokenizer was uploaded but metadata.text names no text column", ["metadata", "text"])
    for i in inputs:
        if i["shape"] is None or i["type"] not in (*NUMERIC, "string"):
            raise InvalidModel(f"input {i['name']!r} is a {i['type']} tensor; expected numbers or strings")
    given = meta.get("features")
    if len(inputs) == 1 and len(inputs[0]["shape"]) == 2 and inputs[0]["type"] in NUMERIC:
        width = inputs[0]["shape"][1]
        if given is None and isinstance(width, int) and width > 1:
            given = [f"f{j}" for j in range(width)]
        elif given is None and not isinstance(width, int):
            raise InvalidModel(
                "the input's width is not fixed: name its columns in metadata.features", ["metadata", "features"]
            )
        if given is not None:
            if isinstance(width, int) and len(given) != width:
                raise InvalidModel(
                    f"metadata.features: {len(given)} names for an input {width} columns wide",
                    ["metadata", "features"],
                )
            return "tensor", [{"name": f, "dtype": "number"} for f in given]
    if any(len(i["shape"]) not in (1, 2) or (len(i["shape"]) == 2 and i["shape"][1] != 1) for i in inputs):
        shapes = ", ".join(f"{i['name']} {i['shape']}" for i in inputs)
        raise InvalidModel(
            f"inputs {shapes} match no layout: expected one 2-D "
            "numeric input [n, F], one [n, 1] input per column, or input_ids/attention_mask with a tokenizer"
        )
    if given is not None and sorted(given) != sorted(names):
        raise InvalidModel(
            f"metadata.features {given} differ from the graph's inputs {names}; with one input per column the "
            "features are the input names",
            ["metadata", "features"],
        )
    return "columns", [{"name": i["name"], "dtype": "category" if i["type"] == "string" else "number"} for i in inputs]


def _output(outputs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    by_name = {o["name"]: o for o in outputs}
    if "output" in meta:
        chosen = by_name.get(meta["output"])
        if chosen is None:
            raise InvalidModel(
                f"metadata.output: no output {meta['output']!r}; outputs: {', '.join(by_name)}", ["metadata", "output"]
            )
    else:
        tensors = [o for o in outputs if o["type"] in ("float", "double", "float16")]  # not a label output
        named = [o for o in outputs if o["name"] in NAMED_OUTPUTS]
        if not named and len(tensors) != 1:
            raise InvalidModel(
                "metadata.output: name the output holding probabilities, logits or values; outputs: "
                + ", ".join(by_name),
                ["metadata", "output"],
            )
        chosen = (named or tensors)[0]
    if chosen["type"] not in NUMERIC or chosen["shape"] is None:
        hint = " (skl2onnx's ZipMap: convert with options={'zipmap': False})" if chosen["type"] != "tensor_type" else ""
        raise InvalidModel(
            f"output {chosen['name']!r} is a {chosen['type']}, not a numeric tensor{hint}", ["metadata", "output"]
        )
    return str(chosen["name"])


def _check_batch(inputs: list[dict[str, Any]], meta: dict[str, Any]) -> Any:
    for i in inputs:
        first = (i["shape"] or [None])[0] if i["shape"] != [] else 1
        if meta.get("batch") == 1:
            if first not in (1, None) and not isinstance(first, str):
                raise InvalidModel(f"input {i['name']!r} has batch dimension {first}, not 1", ["metadata", "batch"])
        elif isinstance(first, int):
            raise InvalidModel(
                f"input {i['name']!r} has a fixed batch dimension {first}: export it with a dynamic first dimension "
                "(torch.onnx.export(dynamic_axes=...), skl2onnx [None, F]) or set metadata batch: 1",
                ["metadata", "batch"],
            )
    return meta.get("batch", "dynamic")


def _sample_rows(layout: str, features: list[dict[str, str]], n: int) -> list[list[Any]]:
    if layout == "text":
        return [[SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]] for i in range(n)]
    return [[0.0 if f["dtype"] == "number" else "" for f in features] for _ in range(n)]


def _decide(raw: np.ndarray, meta: dict[str, Any], output: str) -> tuple[str, list[Any] | None, str]:
    """Task, labels and output kind from the test output's shape and the metadata."""
    width = 1 if raw.ndim == 1 else raw.shape[1]
    task = meta.get("task") or ("classification" if "labels" in meta or width > 1 else "regression")
    if task == "regression":
        if width != 1:
            raise InvalidModel(f"output {output!r} has {width} columns; a regression gives one", ["metadata", "task"])
        return task, None, "values"
    if width < 2:
        raise InvalidModel(
            f"output {output!r} has {width} column; a classifier gives one per class", ["metadata", "output"]
        )
    labels = meta.get("labels") or list(range(width))
    if len(labels) != width:
        raise InvalidModel(
            f"metadata.labels: {len(labels)} labels for an output of {width} classes", ["metadata", "labels"]
        )
    kind = meta.get("output_kind")
    if kind is None:
        sums = raw.sum(axis=1)
        looks = bool(np.all(raw >= 0) and np.allclose(sums, 1.0, atol=1e-4))
        kind = "logits" if "logit" in output.lower() or not looks else "probabilities"
    return task, labels, kind


def check(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields of a model that passes every check; InvalidModel naming the field otherwise."""
    path = directory / MODEL_FILE
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InvalidModel(f"not an ONNX model: the file does not parse as an ONNX protobuf ({exc})") from exc
    if not model.graph.node and not model.graph.input:
        raise InvalidModel("not an ONNX model: the file holds no graph")
    external = _check_external_data(model, directory)
    opsets = _check_domains(model)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise InvalidModel(f"onnx.checker refused the graph: {str(exc)[:600]}") from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_describe(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_describe(v) for v in model.graph.output]
    tokenizer = (directory / TOKENIZER_FILE).is_file()
    layout, features = _layout(inputs, meta, tokenizer)
    spec: dict[str, Any] = {
        "file": MODEL_FILE,
        "layout": layout,
        "inputs": inputs,
        "outputs": outputs,
        "output": _output(outputs, meta),
        "batch": _check_batch(inputs, meta),
        "opsets": opsets,
        "ir_version": int(model.ir_version),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "external_data": external,
    }
    if layout == "text":
        spec["text"] = _text_spec(directory, meta)
    try:
        runner = OnnxModel(
            directory, spec, [f["name"] for f in features], providers=["CPUExecutionProvider"], threads=1
        )
        n = 1 if spec["batch"] == 1 else 2
        raw, _ = runner.outputs(_sample_rows(layout, features, n))
    except MLQError:
        raise
    except Exception as exc:
        raise InvalidModel(f"the test inference on generated rows failed: {str(exc)[:600]}") from exc
    if raw.shape[0] != n:
        raise InvalidModel(
            f"output {spec['output']!r} has {raw.shape[0]} rows for {n} input rows", ["metadata", "output"]
        )
    task, labels, spec["output_kind"] = _decide(raw, meta, spec["output"])
    if not np.all(np.isfinite(to_scores(raw, task, spec["output_kind"]))):
        raise InvalidModel(f"the test inference gave NaN or infinite values in output {spec['output']!r}")
    return {
        "task": task,
        "classes": labels,
        "features": features,
        "onnx": spec,
        "library_versions": {"onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }


def _text_spec(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    try:
        tokenizer = load_tokenizer(directory / TOKENIZER_FILE, DEFAULT_MAX_LENGTH)
        from tokenizers import Tokenizer

        configured = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    except Exception as exc:
        raise InvalidModel(f"tokenizer: the tokenizer.json does not load: {str(exc)[:400]}", ["tokenizer"]) from exc
    truncation = configured.truncation or {}
    max_length = int(meta.get("max_length") or truncation.get("max_length") or DEFAULT_MAX_LENGTH)
    del tokenizer
    return {
        "column": meta["text"],
        "max_length": max_length,
        "tokenizer_file": TOKENIZER_FILE,
        "pad_id": pad_id_of(configured),
    }


def main(argv: list[str]) -> int:
    directory, meta = Path(argv[0]), json.loads(argv[1])
    try:
        report: dict[str, Any] = {"ok": True, "manifest": check(directory, meta)}
    except MLQError as exc:
        report = {"ok": False, "error": {"message": exc.message, "errors": exc.errors}}
    sys.stdout.write("\n" + json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
