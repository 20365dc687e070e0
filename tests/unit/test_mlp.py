"""The PyTorch training loop: learning, determinism, cancellation, checkpoint/resume and early stopping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from training.errors import Cancelled, InvalidParams
from training.mlp import CHECKPOINT_NAME, MLP, evaluate_loss, resolve_device, train_loop
from training.params import CLASSIFICATION, REGRESSION

BATCH = 16


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, ...]:
    X, y = load_iris(return_X_y=True)
    X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    return (scaler.transform(X_tr).astype(np.float32), y_tr, scaler.transform(X_va).astype(np.float32), y_va)


def new_model(seed: int = 0, hidden: tuple[int, ...] = (16,)) -> MLP:
    torch.manual_seed(seed)
    return MLP(4, list(hidden), 3)


def train(model: MLP, data: tuple[np.ndarray, ...], **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        task=CLASSIFICATION,
        epochs=4,
        batch_size=BATCH,
        lr=0.01,
        optimizer="adam",
        weight_decay=0.0,
        early_stopping_patience=0,
        seed=0,
        device="cpu",
    )
    kwargs.update(overrides)
    return train_loop(model, *data, **kwargs)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_mlp_learns_iris_to_high_validation_accuracy(iris: tuple[np.ndarray, ...]) -> None:
    model = new_model()
    epochs: list[dict[str, Any]] = []
    result = train(model, iris, epochs=30, on_progress=lambda **kw: epochs.append(kw))
    with torch.no_grad():
        accuracy = (model(torch.as_tensor(iris[2])).argmax(1).numpy() == iris[3]).mean()
    assert accuracy > 0.85
    assert result["epochs_run"] == 30 and result["stopped_early"] is False
    assert [e["epoch"] for e in epochs] == list(range(1, 31))
    assert all(e["epochs"] == 30 and e["lr"] == 0.01 and e["val_loss"] is not None for e in epochs)
    assert epochs[-1]["loss"] < epochs[0]["loss"]


def test_regression_uses_mse_on_a_one_column_output() -> None:
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    torch.manual_seed(0)
    model = MLP(10, [16], 1)
    result = train_loop(
        model,
        X[:350],
        y[:350],
        X[350:],
        y[350:],
        task=REGRESSION,
        epochs=15,
        batch_size=32,
        lr=0.01,
        seed=0,
        device="cpu",
    )
    # An MSE below the target variance (1.0 after standardizing) means it learned something.
    assert result["best_val_loss"] < 0.7


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_same_seed_and_data_give_identical_weights_and_losses(iris: tuple[np.ndarray, ...], optimizer: str) -> None:
    def run() -> tuple[MLP, list[float]]:
        model, losses = new_model(seed=3), []
        train(model, iris, seed=3, optimizer=optimizer, on_progress=lambda **kw: losses.append(kw["loss"]))
        return model, losses

    runs = [run(), run()]
    assert states_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    other = new_model(seed=3)
    train(other, iris, seed=4, optimizer=optimizer)  # another shuffling order gives other weights
    assert not states_equal(runs[0][0], other)


def test_should_stop_cancels_within_one_batch_and_saves_nothing_new(
    iris: tuple[np.ndarray, ...], tmp_path: Path
) -> None:
    batches_per_epoch = -(-len(iris[0]) // BATCH)
    allowed = batches_per_epoch + 3  # stop three batches into epoch 2
    model = new_model()
    steps = {"train_forwards": 0, "checks": 0}

    def count_forward(module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training:
            steps["train_forwards"] += 1

    def should_stop() -> bool:
        steps["checks"] += 1
        return steps["checks"] > allowed

    model.register_forward_hook(count_forward)
    epochs: list[int] = []
    with pytest.raises(Cancelled, match="epoch 2"):
        train(
            model,
            iris,
            checkpoint_dir=tmp_path,
            should_stop=should_stop,
            on_progress=lambda **kw: epochs.append(kw["epoch"]),
        )
    assert steps["train_forwards"] == allowed  # not one batch more after should_stop said True
    assert steps["checks"] == allowed + 1
    assert epochs == [1]
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("optimizer,patience", [("adam", 0), ("sgd", 3)])
def test_a_run_interrupted_in_epoch_2_and_resumed_ends_exactly_like_an_uninterrupted_one(
    iris: tuple[np.ndarray, ...], tmp_path: Path, optimizer: str, patience: int
) -> None:
    settings: dict[str, Any] = dict(epochs=5, optimizer=optimizer, early_stopping_patience=patience, seed=7)
    straight = new_model()
    straight_progress: list[dict[str, Any]] = []
    straight_result = train(straight, iris, **settings, on_progress=lambda **kw: straight_progress.append(kw))

    checks = {"n": 0}
    stop_at = -(-len(iris[0]) // BATCH) + 2  # two batches into epoch 2

    def should_stop() -> bool:
        checks["n"] += 1
        return checks["n"] > stop_at

    progress: list[dict[str, Any]] = []
    with pytest.raises(Cancelled):
        train(
            new_model(),
            iris,
            **settings,
            checkpoint_dir=tmp_path,
            should_stop=should_stop,
            on_progress=lambda **kw: progress.append(kw),
        )
    # A fresh process would build a fresh model; the checkpoint supplies everything else.
    resumed = new_model(seed=99)
    resumed_result = train(
        resumed, iris, **settings, checkpoint_dir=tmp_path, on_progress=lambda **kw: progress.append(kw)
    )
    assert [p["epoch"] for p in progress] == [1, 2, 3, 4, 5]
    assert states_equal(straight, resumed)
    assert resumed_result == straight_result
    assert progress == straight_progress


def test_the_checkpoint_loads_with_weights_only_and_holds_the_resume_state(
    iris: tuple[np.ndarray, ...], tmp_path: Path
) -> None:
    model = new_model()
    train(model, iris, epochs=2, checkpoint_dir=tmp_path, early_stopping_patience=2)
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["epoch"] == 2
    assert {"model", "optimizer", "torch_rng", "shuffle_rng", "best_state", "best_loss", "bad_epochs"} <= set(ckpt)
    assert isinstance(ckpt["shuffle_rng"], torch.Tensor) and isinstance(ckpt["torch_rng"], torch.Tensor)
    assert list(tmp_path.iterdir()) == [tmp_path / CHECKPOINT_NAME]  # no temporary file left behind


def test_a_checkpoint_written_with_other_settings_is_refused(iris: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    train(new_model(), iris, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(InvalidParams, match="other settings"):
        train(new_model(), iris, epochs=2, lr=0.5, checkpoint_dir=tmp_path)


def test_early_stopping_stops_before_max_epochs_and_restores_the_best_weights(iris: tuple[np.ndarray, ...]) -> None:
    X_tr, y_tr, X_va, y_va = iris
    # Validation labels that contradict the training labels: the better the fit, the worse the validation loss.
    wrong = (y_va + 1) % 3
    model = new_model(hidden=(32,))
    val_losses: list[float] = []
    messages: list[str | None] = []

    def seen(**kw: Any) -> None:
        val_losses.append(kw["val_loss"])
        messages.append(kw.get("message"))

    result = train(
        model,
        (X_tr, y_tr, X_va, wrong),
        epochs=100,
        lr=0.05,
        early_stopping_patience=3,
        on_progress=seen,
    )
    assert result["stopped_early"] is True
    # The last progress says why the training ended before epoch 100; the ones before it say nothing of the kind.
    assert messages[-1] == f"early stop at epoch {result['epochs_run']}: val_loss did not improve for 3 epochs"
    assert not any(messages[:-1])
    assert result["epochs_run"] < 100 and len(val_losses) == result["epochs_run"]
    assert result["best_epoch"] == result["epochs_run"] - 3
    assert result["best_val_loss"] == min(val_losses)
    current = evaluate_loss(
        model, torch.as_tensor(X_va), torch.as_tensor(wrong), torch.nn.CrossEntropyLoss(), CLASSIFICATION
    )
    assert current == pytest.approx(result["best_val_loss"], rel=1e-6)
    assert current < val_losses[-1]


def test_without_a_validation_set_the_train_loss_drives_early_stopping(iris: tuple[np.ndarray, ...]) -> None:
    X_tr, y_tr, _, _ = iris
    seen: list[dict[str, Any]] = []
    result = train(
        new_model(),
        (X_tr, y_tr, np.empty((0, 4), np.float32), np.empty(0)),
        epochs=5,
        early_stopping_patience=2,
        on_progress=lambda **kw: seen.append(kw),
    )
    assert all(s["val_loss"] is None for s in seen)
    assert result["best_val_loss"] == min(s["loss"] for s in seen)


def test_a_diverging_run_fails_with_advice_instead_of_training_on_nan() -> None:
    X = np.full((32, 2), 1e30, dtype=np.float32)
    y = np.ones(32, dtype=np.float32)
    torch.manual_seed(0)
    with pytest.raises(InvalidParams, match="lower lr"):
        train_loop(
            MLP(2, [4], 1),
            X,
            y,
            None,
            None,
            task=REGRESSION,
            epochs=2,
            batch_size=8,
            lr=1.0,
            optimizer="sgd",
            device="cpu",
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_with_a_clear_message_and_auto_picks_the_cpu() -> None:
    with pytest.raises(InvalidParams, match="device 'cuda' requested but no GPU is visible; use 'auto' or 'cpu'"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_an_unknown_device_name_is_refused() -> None:
    with pytest.raises(InvalidParams, match="unknown device 'tpu'"):
        resolve_device("tpu")
