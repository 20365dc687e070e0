"""Dynamic int8 quantization of the MLP, stored as data: int8 weights + scales in safetensors, a JSON architecture.

`torch.ao.quantization.quantize_dynamic` swaps every `nn.Linear` for a `DynamicQuantizedLinear`: int8 weights with
a scale (per output row, or one per layer) and float biases; activations are quantized on the fly per batch. Its
usual way to persist is `torch.save` of the module, i.e. pickle, which the design forbids. So the int8 weights,
their scales and zero points and the biases are written as plain tensors, and loading rebuilds the same modules
from the architecture and sets those tensors: nothing in the files is executed. Dynamic quantization runs on the
CPU only, so a quantized version always loads there, whatever device its worker has.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.algorithms import ARCHITECTURE_FILE, ARCHITECTURE_KEYS, WEIGHTS_FILE, TorchMLPModel
from training.errors import ArtifactTampered, MLQError
from training.mlp import MLP

KIND = "torch_int8"


def _quantize(net: nn.Module, per_channel: bool) -> nn.Module:
    # torch 2.13 marks eager-mode quantization deprecated in favour of torchao; it is what ships with torch here.
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized: nn.Module = quantize_dynamic(
            copy.deepcopy(net).cpu().eval(), {nn.Linear: qconfig}, dtype=torch.qint8
        )
        return quantized


def _quantized_linears(net: nn.Module) -> dict[str, Any]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return {name: m for name, m in net.named_modules() if isinstance(m, DynamicQuantizedLinear)}


class QuantizedMLPModel(TorchMLPModel):
    """The MLP with int8 Linear layers; predicts like TorchMLPModel (same architecture keys, same outputs)."""

    kind = KIND

    @classmethod
    def from_float(cls, model: TorchMLPModel, per_channel: bool = True) -> QuantizedMLPModel:
        if model.net is None:
            raise MLQError("the MLP has not been fitted or loaded yet; nothing to quantize")
        out = cls(
            model.task,
            {"hidden_layers": model.architecture["hidden_layers"]},
            model.architecture["input_dim"],
            model.architecture["output_dim"],
        )
        out.architecture = {
            **model.architecture,
            "quantization": {"dtype": "qint8", "per_channel": per_channel, "method": "dynamic"},
        }
        out.net = _quantize(model.net, per_channel)  # type: ignore[assignment]
        return out

    def _forward(self, X: Any) -> torch.Tensor:
        # The int8 layers hold packed weights, not parameters, and run on the CPU only.
        if self.net is None:
            raise MLQError("the quantized MLP has not been built or loaded yet")
        self.net.eval()
        with torch.inference_mode():
            out: torch.Tensor = self.net(torch.as_tensor(np.asarray(X, dtype=np.float32)))
            return out.float()

    def save(self, directory: Path) -> None:
        if self.net is None:
            raise MLQError("the quantized MLP has not been built yet; nothing to save")
        directory.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for name, layer in _quantized_linears(self.net).items():
            weight, bias = layer.weight(), layer.bias()
            tensors[f"{name}.weight_int8"] = weight.int_repr().contiguous()
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                tensors[f"{name}.scales"] = weight.q_per_channel_scales().to(torch.float64).contiguous()
                tensors[f"{name}.zero_points"] = weight.q_per_channel_zero_points().to(torch.int64).contiguous()
            else:
                tensors[f"{name}.scales"] = torch.tensor([weight.q_scale()], dtype=torch.float64)
                tensors[f"{name}.zero_points"] = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
            tensors[f"{name}.bias"] = bias.detach().float().contiguous()
        save_file(tensors, str(directory / WEIGHTS_FILE))
        (directory / ARCHITECTURE_FILE).write_text(json.dumps(self.architecture, indent=2))

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> QuantizedMLPModel:
        try:
            arch = json.loads((directory / ARCHITECTURE_FILE).read_text())
            missing = [k for k in (*ARCHITECTURE_KEYS, "quantization") if k not in arch]
            if missing:
                raise ValueError(f"missing keys {missing}")
            per_channel = bool(arch["quantization"].get("per_channel"))
            model = cls(arch["task"], {"hidden_layers": arch["hidden_layers"]}, arch["input_dim"], arch["output_dim"])
            model.architecture = {k: arch[k] for k in (*ARCHITECTURE_KEYS, "quantization")}
            # The module structure comes from the architecture; the file only fills in tensors.
            net = _quantize(MLP(arch["input_dim"], arch["hidden_layers"], arch["output_dim"]), per_channel)
            tensors = load_file(str(directory / WEIGHTS_FILE))
            layers = _quantized_linears(net)
            if not layers:
                raise ValueError("the architecture has no Linear layer to quantize")
            expected = {f"{n}.{part}" for n in layers for part in ("weight_int8", "scales", "zero_points", "bias")}
            if set(tensors) != expected:
                raise ValueError(f"tensors {sorted(set(tensors) ^ expected)} missing or unexpected")
            for name, layer in layers.items():
                layer.set_weight_bias(_weight(tensors, name, per_channel, layer), tensors[f"{name}.bias"].float())
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise ArtifactTampered(f"cannot load the quantized MLP from {directory}: {exc}") from exc
        model.net = net  # type: ignore[assignment]
        return model


def _weight(tensors: dict[str, torch.Tensor], name: str, per_channel: bool, layer: Any) -> torch.Tensor:
    """The int8 weight tensor of one layer, checked against the layer's shape before torch sees it."""
    ints, scales, zeros = (tensors[f"{name}.{p}"] for p in ("weight_int8", "scales", "zero_points"))
    shape = (layer.out_features, layer.in_features)
    rows = shape[0] if per_channel else 1
    if ints.dtype != torch.int8 or tuple(ints.shape) != shape or scales.shape != (rows,) or zeros.shape != (rows,):
        raise ValueError(
            f"layer {name}: int8 weight {tuple(ints.shape)} / scales {tuple(scales.shape)} do not fit a {shape} layer"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if per_channel:
            return torch._make_per_channel_quantized_tensor(ints, scales.double(), zeros.long(), 0)
        return torch._make_per_tensor_quantized_tensor(ints, float(scales[0]), int(zeros[0]))


def dequantized_state(model: QuantizedMLPModel) -> dict[str, torch.Tensor]:
    """A float MLP state dict with the int8-rounded weights (for the ONNX export of a quantized version)."""
    assert model.net is not None
    state = {}
    for name, layer in _quantized_linears(model.net).items():
        state[f"{name}.weight"] = layer.weight().dequantize().float()
        state[f"{name}.bias"] = layer.bias().detach().float()
    return state
