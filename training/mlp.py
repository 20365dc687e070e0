"""The PyTorch MLP and its one training loop (in the spirit of nanoGPT's train.py: one readable function).

The loop is deterministic given the seed and the data, writes a checkpoint after every epoch, and resumes from it,
so that a run interrupted after epoch k and resumed ends with exactly the weights an uninterrupted run would have.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.errors import Cancelled, InvalidParams
from training.params import CLASSIFICATION

CHECKPOINT_NAME = "last.pt"
# Validation and inference forward passes are chunked so a big validation set cannot exhaust GPU memory.
_EVAL_CHUNK = 65_536


class MLP(nn.Module):
    """Linear → ReLU stacks, one per hidden layer, then a linear output layer (logits or one regression value)."""

    def __init__(self, input_dim: int, hidden_layers: Sequence[int], output_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_layers:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, output_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


def resolve_device(device: str) -> torch.device:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" into a torch.device, refusing a GPU that is not there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InvalidParams(
                f"device {device!r} requested but no GPU is visible; use 'auto' or 'cpu'",
                errors=[{"loc": ["device"], "msg": "no GPU is visible"}],
            )
        return torch.device(device)
    raise InvalidParams(
        f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'",
        errors=[{"loc": ["device"], "msg": "must be one of 'auto', 'cpu', 'cuda'"}],
    )


def outputs_for(model: nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    """The forward pass shaped for the loss: (n, K) logits, or (n,) values for regression."""
    out: torch.Tensor = model(x)
    return out if task == CLASSIFICATION else out.squeeze(-1)


def train_loop(
    model: nn.Module,
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    *,
    task: str,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    early_stopping_patience: int = 0,
    seed: int = 0,
    device: str | torch.device = "auto",
    checkpoint_dir: Path | None = None,
    on_progress: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    class_weight: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Train `model` in place; return {"epochs_run", "best_epoch", "best_val_loss", "stopped_early"}.

    Regression targets are expected already standardized (the caller owns the scaling). Without a validation set
    (X_val empty or None) the train loss is what early stopping watches and what "best_val_loss" reports.
    With early stopping on (patience > 0) the model ends with the weights of its best epoch.
    Raises Cancelled within one batch of `should_stop()` returning True; the checkpoint then still holds the
    last finished epoch, so calling again with the same checkpoint_dir resumes from there.
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    # Two RNGs, both seeded and both checkpointed: the global one would drive any stochastic layer (dropout), the
    # private generator drives the shuffling order alone, so nothing else in the process can shift our batches.
    torch.manual_seed(seed)
    shuffle_rng = torch.Generator().manual_seed(seed)

    # Data: float32 everywhere, moved to the device once (tabular data fits), indexed by a permutation per epoch.
    model.to(dev)
    y_dtype = torch.int64 if task == CLASSIFICATION else torch.float32
    X_tr = torch.as_tensor(np.asarray(X_train, dtype=np.float32)).to(dev)
    y_tr = torch.as_tensor(np.asarray(y_train)).to(dev, y_dtype)
    has_val = X_val is not None and len(X_val) > 0
    if has_val:
        X_va = torch.as_tensor(np.asarray(X_val, dtype=np.float32)).to(dev)
        y_va = torch.as_tensor(np.asarray(y_val)).to(dev, y_dtype)
    n = X_tr.shape[0]
    # class_weight (one weight per class, e.g. "balanced") makes a rare class's errors cost as much as a common one's.
    weight = torch.as_tensor(class_weight, dtype=torch.float32, device=dev) if class_weight is not None else None
    loss_fn: nn.Module = nn.CrossEntropyLoss(weight=weight) if task == CLASSIFICATION else nn.MSELoss()
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise InvalidParams(
            f"unknown optimizer {optimizer!r}; use 'adam' or 'sgd'",
            errors=[{"loc": ["params", "optimizer"], "msg": "must be 'adam' or 'sgd'"}],
        )
    # What a checkpoint must agree with to be resumed: the same run, not just the same architecture.
    config = {
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "weight_decay": weight_decay,
        "early_stopping_patience": early_stopping_patience,
        "n_train": n,
    }
    if class_weight is not None:  # only when set, so checkpoints of unweighted runs still resume
        config["class_weight"] = [float(w) for w in class_weight]

    # Early-stopping state. best_state lives on the CPU so holding it costs no GPU memory.
    last_epoch = 0
    best_loss = math.inf
    best_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    stopped_early = False

    ckpt_path = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        # weights_only=True: the file is data (tensors, numbers, strings), never code.
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("config") != config:
            raise InvalidParams(
                f"checkpoint {ckpt_path} was written by a run with other settings "
                f"({ckpt.get('config')}); delete it to start over"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])  # moves the moment estimates onto the parameters' device
        torch.set_rng_state(ckpt["torch_rng"])
        shuffle_rng.set_state(ckpt["shuffle_rng"])
        last_epoch, best_loss, best_epoch = ckpt["epoch"], ckpt["best_loss"], ckpt["best_epoch"]
        best_state, bad_epochs, stopped_early = ckpt["best_state"], ckpt["bad_epochs"], ckpt["stopped_early"]

    for epoch in range(last_epoch + 1, epochs + 1):
        if stopped_early:  # resumed from the checkpoint of a run that had already stopped
            break
        model.train()
        perm = torch.randperm(n, generator=shuffle_rng).to(dev)
        # Summed as a tensor: calling .item() per batch would force a GPU sync on every step.
        total = torch.zeros((), device=dev)
        for start in range(0, n, batch_size):
            # Checked before every step so a cancel lands within one batch; nothing of this epoch is saved.
            if should_stop is not None and should_stop():
                raise Cancelled(
                    f"training cancelled during epoch {epoch} of {epochs}; "
                    f"{'the checkpoint holds epoch ' + str(epoch - 1) if ckpt_path else 'no checkpoint'}"
                )
            idx = perm[start : start + batch_size]
            loss = loss_fn(outputs_for(model, X_tr[idx], task), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
        train_loss = total.item() / n
        if not math.isfinite(train_loss):
            raise InvalidParams(
                f"training diverged in epoch {epoch} (train loss is {train_loss}); "
                f"lower lr (now {lr}) or scale the features"
            )
        val_loss = evaluate_loss(model, X_va, y_va, loss_fn, task) if has_val else None
        watched = val_loss if val_loss is not None else train_loss
        if watched < best_loss:
            best_loss, best_epoch, bad_epochs = watched, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        stopped_early = early_stopping_patience > 0 and bad_epochs >= early_stopping_patience
        last_epoch = epoch

        if ckpt_path is not None:
            _save_checkpoint(
                ckpt_path,
                {
                    "config": config,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "shuffle_rng": shuffle_rng.get_state(),
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "bad_epochs": bad_epochs,
                    "stopped_early": stopped_early,
                },
            )
        if on_progress is not None:
            on_progress(
                epoch=epoch,
                epochs=epochs,
                loss=train_loss,
                val_loss=val_loss,
                best_val_loss=best_loss,
                lr=opt.param_groups[0]["lr"],
                **({"message": early_stop_message(epoch, has_val, early_stopping_patience)} if stopped_early else {}),
            )
        if stopped_early:
            break

    # The best epoch's weights are the model we keep when early stopping is on (whether or not it fired).
    if early_stopping_patience > 0 and best_state is not None:
        model.load_state_dict(best_state)
    return {
        "epochs_run": last_epoch,
        "best_epoch": best_epoch,
        "best_val_loss": best_loss if math.isfinite(best_loss) else None,
        "stopped_early": stopped_early,
    }


def early_stop_message(epoch: int, has_val: bool, patience: int) -> str:
    """Why a training ended before its last epoch, for the job's final progress (`epoch 31/60` alone looks broken)."""
    watched = "val_loss" if has_val else "loss"
    return f"early stop at epoch {epoch}: {watched} did not improve for {patience} epochs"


@torch.inference_mode()
def evaluate_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, task: str) -> float:
    """Mean loss over (X, y) in eval mode, chunked to bound memory."""
    model.eval()
    total = torch.zeros((), device=X.device)
    for start in range(0, X.shape[0], _EVAL_CHUNK):
        xb, yb = X[start : start + _EVAL_CHUNK], y[start : start + _EVAL_CHUNK]
        total += loss_fn(outputs_for(model, xb, task), yb) * xb.shape[0]
    return total.item() / X.shape[0]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    # Write beside the target, fsync, then rename: a crash mid-write leaves the previous checkpoint intact.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
