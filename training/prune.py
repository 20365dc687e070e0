"""L1 magnitude pruning of the MLP's Linear weights, with an optional short fine-tuning that keeps the zeros.

Stored dense: a pruned version is an ordinary `torch` MLP whose zeroed weights are real zeros, so it loads and
serves through the same code as any MLP. Sparse storage would not pay at the sparsities that keep accuracy: CSR
needs an index beside every kept value, so at 50 % it is as big as dense (and COO, with two int64 indices, three
times bigger), and on the CPU a sparse matmul of a few hundred columns is slower than the dense one. What pruning
buys here is a smaller download (the tar.gz of zeros compresses), and a starting point for structured pruning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from training.algorithms import TorchMLPModel
from training.mlp import train_loop
from training.params import REGRESSION


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def sparsity(net: nn.Module) -> dict[str, Any]:
    """The share of zero weights over every Linear weight matrix (biases are a rounding error), and per layer."""
    layers = [float((m.weight == 0).sum()) / m.weight.numel() for m in _linears(net)]
    zeros = sum(int((m.weight == 0).sum()) for m in _linears(net))
    total = sum(m.weight.numel() for m in _linears(net))
    return {
        "sparsity": round(zeros / total, 4),
        "zero_weights": zeros,
        "weights": total,
        "layers": [round(s, 4) for s in layers],
    }


def prune_mlp(
    model: TorchMLPModel,
    *,
    amount: float,
    structured: bool,
    finetune_epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    device: str = "auto",
    on_progress: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Prune `model.net` in place; return its sparsity (and the fine-tuning summary)."""
    assert model.net is not None
    linears = _linears(model.net)
    if structured:
        # Whole hidden neurons (rows of L1 norm smallest) go; the output layer keeps one row per class.
        for layer in linears[:-1]:
            prune.ln_structured(layer, name="weight", amount=amount, n=1, dim=0)
    else:
        for layer in linears:
            prune.l1_unstructured(layer, name="weight", amount=amount)
    summary: dict[str, Any] = {}
    if finetune_epochs > 0:
        if model.task == REGRESSION:  # the net predicts the standardized target (see TorchMLPModel.fit)
            a = model.architecture
            y_train = (np.asarray(y_train, dtype=np.float64) - a["target_mean"]) / a["target_std"]
            y_val = (np.asarray(y_val, dtype=np.float64) - a["target_mean"]) / a["target_std"]
        # The pruning masks stay on as forward pre-hooks while fine-tuning: the optimizer moves the surviving
        # weights only, and a pruned weight's gradient is multiplied by its zero mask.
        summary = train_loop(
            model.net,
            X_train,
            y_train,
            X_val,
            y_val,
            task=model.task,
            epochs=finetune_epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    for layer in linears:
        if prune.is_pruned(layer):  # structured pruning leaves the output layer as it is
            prune.remove(layer, "weight")  # bake the mask in: plain weights with zeros, a plain state dict
    model.net.to(torch.device("cpu"))
    return {**sparsity(model.net), "finetune": summary or None}
