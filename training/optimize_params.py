"""Which optimisation methods apply to a model version, and their parameters. Stdlib only.

The API validates an optimize request with this before anything is queued (it reads the parent's manifest, never
its files), and training/optimize.py validates again before it runs, as training/params.py does for training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from training.errors import InvalidParams
from training.params import CLASSIFICATION, ParamSpec, _check_value

METHODS = ("quantize_dynamic", "prune", "distill", "export")
EXPORT_FORMATS = ("onnx", "torchscript")
# Model kinds (manifest "model_kind"): what training/loading.load_model reads, plus the download-only exports.
SERVABLE_KINDS = ("sklearn", "torch", "torch_int8")
EXPORT_KINDS = ("onnx", "torchscript")

_LR = ParamSpec("float", 0.001, 0.0, 1.0, exclusive_minimum=True)
_BATCH = ParamSpec("int", 64, 1, 65_536)

METHOD_SCHEMAS: dict[str, dict[str, ParamSpec]] = {
    "quantize_dynamic": {
        # Per output channel scales cost 4 bytes a row and keep a wide layer's small rows from rounding to zero.
        "per_channel": ParamSpec("bool", True),
    },
    "prune": {
        "amount": ParamSpec("float", 0.5, 0.0, 0.99, exclusive_minimum=True),
        "structured": ParamSpec("bool", False),
        "finetune_epochs": ParamSpec("int", 3, 0, 1000),
        "lr": _LR,
        "batch_size": _BATCH,
        "seed": ParamSpec("int", 0, 0, 2**32 - 1),
    },
    "distill": {
        "hidden_layers": ParamSpec("int_list", [32], 1, 4096, max_items=8),
        "epochs": ParamSpec("int", 30, 1, 10_000),
        "temperature": ParamSpec("float", 2.0, 0.1, 100.0),
        # Weight of the true labels beside the teacher's soft labels (0: soft labels only).
        "alpha": ParamSpec("float", 0.0, 0.0, 1.0),
        "lr": ParamSpec("float", 0.01, 0.0, 1.0, exclusive_minimum=True),
        "batch_size": _BATCH,
        "seed": ParamSpec("int", 0, 0, 2**32 - 1),
    },
    "export": {
        "format": ParamSpec("str", "onnx", choices=EXPORT_FORMATS),
    },
}


def applicable(manifest: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """{method: formats} that apply to the version of `manifest` (formats only matter for export)."""
    kind, task = manifest.get("model_kind"), manifest.get("task")
    out: dict[str, tuple[str, ...]] = {}
    if kind == "torch":
        out["quantize_dynamic"] = ()
        out["prune"] = ()
    if kind in SERVABLE_KINDS and task == CLASSIFICATION:
        out["distill"] = ()  # any classifier with probabilities can teach
    if kind == "torch":
        out["export"] = EXPORT_FORMATS
    elif kind in ("torch_int8", "sklearn"):
        out["export"] = ("onnx",)  # scikit-learn: where skl2onnx converts the pipeline (checked by the job)
    return out


def _describe(methods: dict[str, tuple[str, ...]]) -> str:
    if not methods:
        return "none (this version is an export for download; optimise the version it was exported from)"
    return ", ".join(f"{m} ({'|'.join(formats)})" if m == "export" else m for m, formats in methods.items())


def validate_optimize(method: Any, params: dict[str, Any] | None, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The method's params with defaults filled in; InvalidParams naming the methods that do apply otherwise."""
    what = f"{manifest.get('algorithm', 'model')} ({manifest.get('model_kind')}, {manifest.get('task')})"
    methods = applicable(manifest)
    if method not in METHODS:
        raise InvalidParams(
            f"unknown optimisation method {method!r}; methods: {', '.join(METHODS)}",
            errors=[{"loc": ["method"], "msg": f"must be one of {', '.join(METHODS)}"}],
        )
    if method not in methods:
        raise InvalidParams(
            f"method {method!r} does not apply to version {manifest.get('version')}, a {what}; "
            f"methods that apply: {_describe(methods)}",
            errors=[{"loc": ["method"], "msg": f"applies to this version: {_describe(methods)}"}],
        )
    schema = METHOD_SCHEMAS[method]
    params = dict(params or {})
    errors = [
        {"loc": [key], "msg": f"unknown parameter for {method}; allowed: {', '.join(schema) or 'none'}"}
        for key in params
        if key not in schema
    ]
    for key, spec in schema.items():
        if key in params:
            problem = _check_value(key, spec, params[key])
            if problem:
                errors.append({"loc": [key], "msg": problem})
    if method == "export" and not errors:
        fmt = params.get("format", "onnx")
        if fmt not in methods["export"]:
            errors.append(
                {
                    "loc": ["format"],
                    "msg": f"format {fmt!r} does not apply to a {what}; formats: {', '.join(methods['export'])}",
                }
            )
    if errors:
        raise InvalidParams(
            f"invalid {method} parameters: " + "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in errors), errors=errors
        )
    out = {k: (list(s.default) if isinstance(s.default, list) else s.default) for k, s in schema.items()}
    out.update(params)
    return out
