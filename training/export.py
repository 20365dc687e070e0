"""Exports for use outside mlqueue: ONNX (the preprocessing and the model in one graph) and TorchScript.

ONNX: the fitted preprocessor goes through skl2onnx, the model through skl2onnx (scikit-learn) or torch's exporter
(the MLP, softmax included), and `onnx.compose` joins them, so the file takes raw columns, one input per feature
(`[n, 1]`: float32 for numbers with NaN for a gap, string for categories with "" for a gap), and gives
`probabilities` `[n, K]` (class order as in the manifest's `classes`) or `value` `[n, 1]`. When skl2onnx cannot
convert the preprocessing, the file holds the model alone and takes the preprocessed `features` `[n, d]`.
A quantized MLP is exported with its int8 weights dequantized and torch's per-batch activation rounding written out
in float ops (ONNX Runtime's own int8 kernels round differently), so it matches the served quantized version on
the same batch to about 1e-3, not 1e-6.

TorchScript: a traced module in a file; it can run code when loaded, so mlqueue only ever writes it (the workers
refuse to serve an export, see training/algorithms.check_servable).
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from training.algorithms import SklearnModel, TorchMLPModel
from training.errors import MLQError
from training.mlp import MLP
from training.params import CLASSIFICATION

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
OPSET = 17
ML_OPSET = 3


class ExportUnsupported(MLQError):
    """Raised when a model (or its preprocessing) cannot be written in the requested format."""

    code = "export_unsupported"


class _Serving(nn.Module):
    """The MLP plus what the service does after it: softmax, or undoing the target's standardization."""

    def __init__(self, net: nn.Module, task: str, mean: float | None, std: float | None) -> None:
        super().__init__()
        self.net, self.classify = net, task == CLASSIFICATION
        self.mean, self.std = float(mean or 0.0), float(std or 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return torch.softmax(out, dim=1) if self.classify else out * self.std + self.mean


class _DynamicInt8Input(nn.Module):
    """What torch's dynamic int8 Linear does to its input, in float ops that export to any runtime: the whole
    batch is quantized to 7 bits unsigned (fbgemm's reduce_range) over a range that includes 0, then read back.
    The range is the batch's, so a row's result depends a little on the rows batched with it, as in the service."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = torch.clamp(x.min(), max=0.0)
        high = torch.clamp(x.max(), min=0.0)
        scale = (high - low) / 127.0
        scale = torch.where(scale > 0, scale, torch.full_like(scale, 0.1))  # an all-zero batch, as fbgemm does
        zero = torch.clamp(torch.round(-low / scale), 0.0, 127.0)
        return (torch.clamp(torch.round(x / scale) + zero, 0.0, 127.0) - zero) * scale


def float_net(model: TorchMLPModel) -> nn.Module:
    """A float MLP of `model`; a quantized one gets its int8 weights dequantized and its activation rounding
    emulated (ONNX Runtime's own int8 kernels round differently from torch's fbgemm ones)."""
    if model.kind == "torch_int8":
        from training.quantized import QuantizedMLPModel, dequantized_state

        assert isinstance(model, QuantizedMLPModel)
        a = model.architecture
        net = MLP(a["input_dim"], a["hidden_layers"], a["output_dim"])
        net.load_state_dict(dequantized_state(model))
        layers: list[nn.Module] = []
        for layer in net.layers:
            layers += [_DynamicInt8Input(), layer] if isinstance(layer, nn.Linear) else [layer]
        return nn.Sequential(*layers).eval()
    assert model.net is not None
    return copy.deepcopy(model.net).cpu().eval()


def serving_module(model: TorchMLPModel) -> nn.Module:
    a = model.architecture
    return _Serving(float_net(model), model.task, a.get("target_mean"), a.get("target_std")).eval()


def _onnx_model(model: Any, n_features: int, task: str) -> Any:
    """The model alone as ONNX: input `features` [n, d] float32, output `probabilities` or `value`."""
    import onnx

    out_name = "probabilities" if task == CLASSIFICATION else "value"
    if isinstance(model, TorchMLPModel):
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript-based exporter: an MLP needs nothing newer, and it takes 0.2 s where dynamo takes 4 s.
            torch.onnx.export(
                serving_module(model),
                (torch.zeros(1, n_features),),
                buf,  # type: ignore[arg-type]
                dynamo=False,
                input_names=["features"],
                output_names=[out_name],
                opset_version=OPSET,
                dynamic_axes={"features": {0: "n"}, out_name: {0: "n"}},
            )
        return onnx.load_from_string(buf.getvalue())
    if isinstance(model, SklearnModel):
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        est = model.estimator
        if task == CLASSIFICATION and len(getattr(est, "classes_", [])) != model.n_classes:
            raise ExportUnsupported(
                "the classifier saw fewer classes in training than the manifest lists; its "
                "ONNX probabilities would not line up with `classes`"
            )
        options = {id(est): {"zipmap": False}} if task == CLASSIFICATION else None
        try:
            onx = convert_sklearn(
                est,
                initial_types=[("features", FloatTensorType([None, n_features]))],
                options=options,
                target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
            )
        except Exception as exc:  # skl2onnx raises bare RuntimeError/NotImplementedError for what it lacks
            raise ExportUnsupported(f"skl2onnx cannot convert {type(est).__name__}: {exc}") from exc
        wanted = "probabilities" if task == CLASSIFICATION else "variable"
        _rename_output(onx, wanted, out_name)
        return onx
    raise ExportUnsupported(f"no ONNX exporter for a {type(model).__name__}")


def _rename_output(onx: Any, old: str, new: str) -> None:
    """Rename graph output `old` to `new` and drop the other outputs (a classifier's integer `label`)."""
    if old == new:
        keep = [o for o in onx.graph.output if o.name == new]
    else:
        for node in onx.graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
        keep = [o for o in onx.graph.output if o.name == old]
        for o in keep:
            o.name = new
    del onx.graph.output[:]
    onx.graph.output.extend(keep)


def _onnx_preprocessor(preprocessor: Any, feature_dtypes: dict[str, str], features: list[str]) -> Any:
    """The fitted ColumnTransformer as ONNX: one [n, 1] input per feature, output `transformed_column`."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    pre = copy.deepcopy(preprocessor)  # the edits below are for the converter only
    for _, transformer, _ in pre.transformers_:
        steps = getattr(transformer, "steps", None)
        if steps is None:
            continue
        # The float32 FunctionTransformer only casts (skl2onnx works in float32 anyway) and has no converter.
        transformer.steps = [s for s in steps if s[0] != "float32"]
        for _, step in transformer.steps:
            if getattr(step, "strategy", None) == "most_frequent":
                step.missing_values = ""  # ONNX strings have no NaN: a missing category is fed as ""
    types = [
        (f, FloatTensorType([None, 1]) if feature_dtypes[f] == "number" else StringTensorType([None, 1]))
        for f in features
    ]
    return convert_sklearn(pre, initial_types=types, target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})


def export_onnx(
    preprocessor: Any,
    model: Any,
    features: list[str],
    feature_dtypes: dict[str, str],
    task: str,
    n_features: int,
    path: Path,
) -> dict[str, Any]:
    """Write the ONNX file; return what the manifest says about it (inputs, outputs, opset)."""
    import onnx
    from onnx import compose

    body = _onnx_model(model, n_features, task)
    out_name = body.graph.output[0].name
    try:
        pre = _onnx_preprocessor(preprocessor, feature_dtypes, features)
    except Exception as exc:  # skl2onnx lacks a converter: ship the model alone, say so
        note: str | None = f"the preprocessing is not in the file ({exc})"
        graph, inputs = body, "preprocessed"
    else:
        pre = compose.add_prefix(pre, "pre_", rename_inputs=False, rename_outputs=True)
        body = compose.add_prefix(body, "model_", rename_inputs=False, rename_outputs=False)
        _align(pre, body)
        graph = compose.merge_models(pre, body, io_map=[(pre.graph.output[0].name, "features")])
        inputs, note = "raw", None
    onnx.checker.check_model(graph)
    path.write_bytes(graph.SerializeToString())
    return {
        "format": "onnx",
        "file": path.name,
        "media_type": "application/onnx",
        "opset": OPSET,
        "inputs": inputs,
        "input_names": [i.name for i in graph.graph.input],
        "output": out_name,
        **({"note": note} if note else {}),
    }


def _align(a: Any, b: Any) -> None:
    """merge_models needs one IR version and one opset per domain on both sides."""
    ir = max(a.ir_version, b.ir_version)
    a.ir_version = b.ir_version = ir
    opsets: dict[str, int] = {}
    for m in (a, b):
        for o in m.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    for m in (a, b):
        del m.opset_import[:]
        for domain, version in opsets.items():
            entry = m.opset_import.add()
            entry.domain, entry.version = domain, version


def onnx_feeds(frame: pd.DataFrame, features: list[str], feature_dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """The inputs of a raw-columns ONNX export for a frame of raw rows (as training.rows.frame_from_rows gives)."""
    feeds = {}
    for f in features:
        column = frame[f]
        if feature_dtypes[f] == "number":
            feeds[f] = column.to_numpy(dtype=np.float32).reshape(-1, 1)
        else:
            feeds[f] = np.array(["" if pd.isna(v) else str(v) for v in column], dtype=object).reshape(-1, 1)
    return feeds


def export_torchscript(model: TorchMLPModel, path: Path) -> tuple[dict[str, Any], Any]:
    """Trace the MLP (softmax included) into a TorchScript file: input preprocessed `features` [n, d].

    Returns the manifest's description and the traced module (in memory: the comparison runs it from there)."""
    module = serving_module(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.zeros(2, model.architecture["input_dim"]))
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    path.write_bytes(buf.getvalue())
    info = {
        "format": "torchscript",
        "file": path.name,
        "media_type": "application/octet-stream",
        "inputs": "preprocessed",
        "output": "probabilities" if model.task == CLASSIFICATION else "value",
        "note": "TorchScript runs code when loaded: load it only where you trust it; mlqueue never does",
    }
    return info, traced
