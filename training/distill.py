"""Knowledge distillation: a small MLP student learns a classifier's soft labels (Hinton et al., 2015).

The teacher is any classifier with probabilities (an MLP, a random forest, ...); only its `predict_proba` on the
parent's training split is used, so the student never needs the teacher's code. Softening with a temperature T
raises the small probabilities, which carry what the teacher learned about similar classes; a teacher that gives
probabilities rather than logits is softened as p^(1/T), renormalised (softmax(log p / T)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.algorithms import TorchMLPModel
from training.errors import Cancelled
from training.mlp import resolve_device
from training.params import CLASSIFICATION

_EPS = 1e-7


def soften(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row-wise, in float64."""
    logits = np.log(np.clip(np.asarray(proba, dtype=np.float64), _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    soft = np.exp(logits)
    normalized: np.ndarray = soft / soft.sum(axis=1, keepdims=True)
    return normalized


def distill(
    teacher_proba: np.ndarray,
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    hidden_layers: list[int],
    epochs: int,
    temperature: float,
    alpha: float,
    lr: float,
    batch_size: int,
    seed: int,
    device: str = "auto",
    on_progress: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TorchMLPModel:
    """A fitted student: loss = T² · CE(student/T, soft teacher) + alpha · CE(student, true label)."""
    n_classes = teacher_proba.shape[1]
    student = TorchMLPModel(CLASSIFICATION, {"hidden_layers": hidden_layers}, X_train.shape[1], n_classes)
    torch.manual_seed(seed)  # before the layers exist: the initial weights depend on the seed alone
    net = student.new_net()
    dev = resolve_device(device)
    net.to(dev)
    X = torch.as_tensor(np.asarray(X_train, dtype=np.float32)).to(dev)
    soft = torch.as_tensor(soften(teacher_proba, temperature), dtype=torch.float32).to(dev)
    hard = torch.as_tensor(np.asarray(y_train, dtype=np.int64)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    n = X.shape[0]
    for epoch in range(1, epochs + 1):
        net.train()
        total = torch.zeros((), device=dev)
        perm = torch.randperm(n, generator=order).to(dev)
        for start in range(0, n, batch_size):
            # Checked every batch, as in train_loop: a cancel lands within one batch.
            if should_stop is not None and should_stop():
                raise Cancelled(f"distillation cancelled during epoch {epoch} of {epochs}; nothing registered")
            idx = perm[start : start + batch_size]
            logits = net(X[idx])
            # The T² factor keeps the soft term's gradients the size of the hard term's whatever T is.
            loss = F.cross_entropy(logits / temperature, soft[idx]) * temperature**2
            if alpha > 0:
                loss = loss + alpha * F.cross_entropy(logits, hard[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
        if on_progress is not None:
            on_progress(epoch=epoch, epochs=epochs, loss=total.item() / n, val_loss=None)
    student.net = net.to(torch.device("cpu")).eval()
    student.train_summary = {"epochs_run": epochs}
    return student


def teacher_summary(proba: np.ndarray) -> dict[str, Any]:
    """How confident the teacher's labels were (a near-one-hot teacher teaches little beyond the labels)."""
    return {"mean_max_proba": round(float(np.mean(np.max(proba, axis=1))), 4)}
