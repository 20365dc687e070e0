"""Read a saved model back, whichever kind it is: apart from training/algorithms.py because the int8 kind
(training/quantized.py) builds on algorithms' torch model, so only a module above both can choose between them."""

from __future__ import annotations

from pathlib import Path

from training.algorithms import Model, SklearnModel, TorchMLPModel, check_servable
from training.errors import MLQError
from training.quantized import QuantizedMLPModel


def load_model(directory: Path, kind: str, device: str = "cpu") -> Model:
    """Read a saved model back without executing code from the files; `device` applies to torch models."""
    if kind == "sklearn":
        return SklearnModel.load(directory)
    if kind == "torch":
        return TorchMLPModel.load(directory, device)
    if kind == "torch_int8":  # training/quantized.py: int8 weights + scales, rebuilt without running code
        return QuantizedMLPModel.load(directory)
    check_servable(kind)
    raise MLQError(f"unknown model kind {kind!r}; expected 'sklearn', 'torch' or 'torch_int8'")
