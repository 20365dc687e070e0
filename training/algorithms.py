"""The algorithm catalogue (ALGORITHMS): scikit-learn and PyTorch models behind one small `Model` interface.

`ALGORITHMS` is an explicit dict whose keys equal `training.params.ALGORITHM_NAMES` (a test keeps them equal).
Artifacts load without running code: scikit-learn models through skops with an explicit list of trusted types,
the MLP as safetensors weights plus a JSON architecture.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.utils.class_weight import compute_sample_weight

from training import safe_skops
from training.errors import ArtifactTampered, Cancelled, MLQError
from training.mlp import MLP, resolve_device, train_loop
from training.params import ALGORITHM_TASKS, CLASSIFICATION, REGRESSION, check_algorithm

SKOPS_FILE = "model.skops"
WEIGHTS_FILE = "model.safetensors"
ARCHITECTURE_FILE = "architecture.json"

# Every type a model.skops written by SklearnModel.save may contain, and nothing else. skops itself trusts any
# scikit-learn estimator; we are stricter, so a file holding e.g. a FunctionTransformer(os.system) is refused.
TRUSTED_TYPES: list[str] = [
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.NoneType",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int32",
    "numpy.int64",
    "numpy.bool_",
    "numpy.random.mtrand.RandomState",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.dummy.DummyClassifier",
    "sklearn.dummy.DummyRegressor",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.Interval",
]
ARCHITECTURE_KEYS = ("input_dim", "hidden_layers", "output_dim", "task", "target_mean", "target_std")


@dataclass
class FitHooks:
    """What the caller plugs into a fit: progress reports, the cancel check, where to checkpoint, the device."""

    on_progress: Callable[..., None] | None = None
    should_stop: Callable[[], bool] | None = None
    checkpoint_dir: Path | None = None
    device: str = "auto"


class Model(Protocol):
    """The interface every algorithm's model offers to the pipeline and the predictors."""

    kind: str  # "sklearn" | "torch": which loader reads its files back

    def fit(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray | None,
        y_val: np.ndarray | None,
        hooks: FitHooks,
    ) -> int: ...
    def predict(self, X: np.ndarray) -> np.ndarray: ...
    def predict_proba(self, X: np.ndarray) -> np.ndarray | None: ...
    def save(self, directory: Path) -> None: ...


class SklearnModel:
    """A scikit-learn estimator; classification predictions are class codes 0..n_classes-1."""

    kind = "sklearn"

    def __init__(self, estimator: BaseEstimator, task: str, n_classes: int, balanced_weights: bool = False) -> None:
        self.estimator = estimator
        self.task = task
        self.n_classes = n_classes
        # For estimators without a class_weight argument: "balanced" given to fit() as per-row sample weights.
        self.balanced_weights = balanced_weights

    def fit(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray | None,
        y_val: np.ndarray | None,
        hooks: FitHooks,
    ) -> int:
        # A scikit-learn fit cannot be interrupted, so the cancel check happens once, before it starts.
        if hooks.should_stop is not None and hooks.should_stop():
            raise Cancelled("training cancelled before the fit started")
        if self.balanced_weights:
            self.estimator.fit(X_train, y_train, sample_weight=compute_sample_weight("balanced", y_train))
        else:
            self.estimator.fit(X_train, y_train)
        if hooks.on_progress is not None:
            hooks.on_progress(epoch=1, epochs=1, loss=self._train_loss(X_train, y_train), val_loss=None)
        return 1

    def _train_loss(self, X: np.ndarray, y: np.ndarray) -> float:
        # Log loss / MSE on the training data: the same kind of number the MLP reports per epoch.
        if self.task == CLASSIFICATION:
            proba = self.predict_proba(X)
            return float(log_loss(y, proba, labels=list(range(self.n_classes)))) if proba is not None else 0.0
        return float(mean_squared_error(y, self.predict(X)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        pred: np.ndarray = self.estimator.predict(X)
        return pred.astype(np.int64) if self.task == CLASSIFICATION else pred.astype(np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray | None:
        if self.task != CLASSIFICATION:
            return None
        proba = self.estimator.predict_proba(X)
        # A class missing from the training split has no column; give it probability 0 so columns == codes.
        full = np.zeros((proba.shape[0], self.n_classes), dtype=np.float64)
        full[:, np.asarray(self.estimator.classes_, dtype=np.int64)] = proba
        # Renormalized in float64: float32 inputs give float32 probabilities whose rows miss 1.0 by rounding.
        normalized: np.ndarray = full / full.sum(axis=1, keepdims=True)
        return normalized

    def save(self, directory: Path) -> None:
        safe_skops.dump(
            {"estimator": self.estimator, "task": self.task, "n_classes": self.n_classes},
            directory / SKOPS_FILE,
            TRUSTED_TYPES,
        )

    @classmethod
    def load(cls, directory: Path) -> SklearnModel:
        content = safe_skops.load(directory / SKOPS_FILE, TRUSTED_TYPES)
        return cls(content["estimator"], content["task"], int(content["n_classes"]))


class TorchMLPModel:
    """The PyTorch MLP. Regression trains on a standardized target and de-standardizes its predictions."""

    kind = "torch"

    def __init__(self, task: str, params: dict[str, Any], n_features: int, n_classes: int) -> None:
        self.task = task
        self.params = params
        self.architecture: dict[str, Any] = {
            "input_dim": n_features,
            "hidden_layers": list(params["hidden_layers"]),
            "output_dim": n_classes if task == CLASSIFICATION else 1,
            "task": task,
            "target_mean": None,
            "target_std": None,
        }
        self.net: MLP | None = None
        self.initial_state: dict[str, torch.Tensor] | None = None  # set by training/warm_start.py
        self.train_summary: dict[str, Any] | None = None  # train_loop's result: best epoch, stopped early, ...

    def new_net(self) -> MLP:
        a = self.architecture
        return MLP(a["input_dim"], a["hidden_layers"], a["output_dim"])

    def fit(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray | None,
        y_val: np.ndarray | None,
        hooks: FitHooks,
    ) -> int:
        p = self.params
        if self.task == REGRESSION and self.initial_state is not None:
            # Warm start: the weights predict in the base version's target units; keep its mean and std.
            a = self.architecture
            y_train = (np.asarray(y_train, dtype=np.float64) - a["target_mean"]) / a["target_std"]
            y_val = (np.asarray(y_val, dtype=np.float64) - a["target_mean"]) / a["target_std"]
        elif self.task == REGRESSION:
            # Standardize y so one learning rate suits any target scale; keep mean/std to undo it at prediction.
            mean, std = float(np.mean(y_train)), float(np.std(y_train))
            std = std if std > 0 else 1.0
            self.architecture.update(target_mean=mean, target_std=std)
            y_train = (np.asarray(y_train, dtype=np.float64) - mean) / std
            y_val = (np.asarray(y_val, dtype=np.float64) - mean) / std
        # Seeded before the layers are built so the initial weights, too, depend only on the seed.
        torch.manual_seed(p["seed"])
        self.net = self.new_net()
        if self.initial_state is not None:  # warm start: continue from a registered version's weights
            self.net.load_state_dict(self.initial_state)
        class_weight = None
        if self.task == CLASSIFICATION and p.get("class_weight") == "balanced":
            counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=self.architecture["output_dim"])
            # sklearn's "balanced": n / (K * count); a class absent from the train split gets weight 0, not inf.
            class_weight = [len(y_train) / (len(counts) * c) if c else 0.0 for c in counts.tolist()]
        self.train_summary = train_loop(
            self.net,
            X_train,
            y_train,
            X_val,
            y_val,
            task=self.task,
            epochs=p["epochs"],
            batch_size=p["batch_size"],
            lr=p["lr"],
            optimizer=p["optimizer"],
            weight_decay=p["weight_decay"],
            early_stopping_patience=p["early_stopping_patience"],
            seed=p["seed"],
            device=hooks.device,
            checkpoint_dir=hooks.checkpoint_dir,
            on_progress=hooks.on_progress,
            should_stop=hooks.should_stop,
            class_weight=class_weight,
        )
        return int(self.train_summary["epochs_run"])

    def _forward(self, X: np.ndarray) -> torch.Tensor:
        if self.net is None:
            raise MLQError("the MLP has not been fitted or loaded yet")
        device = next(self.net.parameters()).device
        self.net.eval()
        # One forward pass for the whole batch: inference requests are batched upstream for exactly this.
        with torch.inference_mode():
            out: torch.Tensor = self.net(torch.as_tensor(np.asarray(X, dtype=np.float32)).to(device))
            return out.float().cpu()

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self._forward(X)
        if self.task == CLASSIFICATION:
            return out.argmax(dim=1).numpy().astype(np.int64)
        a = self.architecture
        values: np.ndarray = out.squeeze(-1).numpy().astype(np.float64) * a["target_std"] + a["target_mean"]
        return values

    def predict_proba(self, X: np.ndarray) -> np.ndarray | None:
        if self.task != CLASSIFICATION:
            return None
        return torch.softmax(self._forward(X), dim=1).numpy().astype(np.float64)

    def save(self, directory: Path) -> None:
        if self.net is None:
            raise MLQError("the MLP has not been fitted yet; nothing to save")
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, str(directory / WEIGHTS_FILE)
        )
        (directory / ARCHITECTURE_FILE).write_text(json.dumps(self.architecture, indent=2))

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> TorchMLPModel:
        try:
            arch = json.loads((directory / ARCHITECTURE_FILE).read_text())
            missing = [k for k in ARCHITECTURE_KEYS if k not in arch]
            if missing:
                raise ValueError(f"missing keys {missing}")
            n_classes = arch["output_dim"] if arch["task"] == CLASSIFICATION else 0
            model = cls(arch["task"], {"hidden_layers": arch["hidden_layers"]}, arch["input_dim"], n_classes)
            model.architecture = {k: arch[k] for k in ARCHITECTURE_KEYS}
            # Built on the meta device, then the loaded tensors assigned: the random init of weights about to be
            # overwritten cost ~50 ms of a 4.7 M-parameter model's cold load. Cloned first: a tensor of the file's
            # buffer may sit unaligned, and kernels then sum in another order (predictions off in the 8th digit).
            # Strict: every tensor, right shapes.
            with torch.device("meta"):
                net = model.new_net()
            weights = {k: v.clone() for k, v in load_file(str(directory / WEIGHTS_FILE)).items()}
            net.load_state_dict(weights, assign=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ArtifactTampered(f"cannot load the MLP from {directory}: {exc}") from exc
        model.net = net.to(resolve_device(device))
        return model


def _logistic_regression(task: str, params: dict[str, Any], n_features: int, n_classes: int) -> Model:
    est = LogisticRegression(
        C=params["C"], max_iter=params["max_iter"], class_weight=params["class_weight"], random_state=0
    )
    return SklearnModel(est, task, n_classes)


def _random_forest(task: str, params: dict[str, Any], n_features: int, n_classes: int) -> Model:
    if task == CLASSIFICATION:
        est: BaseEstimator = RandomForestClassifier(
            n_estimators=params["n_estimators"],
            max_depth=params["max_depth"],
            min_samples_leaf=params["min_samples_leaf"],
            random_state=params["seed"],
            n_jobs=1,
            class_weight=params.get("class_weight"),
        )
    else:
        est = RandomForestRegressor(
            n_estimators=params["n_estimators"],
            max_depth=params["max_depth"],
            min_samples_leaf=params["min_samples_leaf"],
            random_state=params["seed"],
            n_jobs=1,
        )
    return SklearnModel(est, task, n_classes)


def _gradient_boosting(task: str, params: dict[str, Any], n_features: int, n_classes: int) -> Model:
    cls = GradientBoostingClassifier if task == CLASSIFICATION else GradientBoostingRegressor
    est = cls(
        n_estimators=params["n_estimators"],
        learning_rate=params["learning_rate"],
        max_depth=params["max_depth"],
        subsample=params["subsample"],
        random_state=params["seed"],
    )
    balanced = task == CLASSIFICATION and params.get("class_weight") == "balanced"
    return SklearnModel(est, task, n_classes, balanced_weights=balanced)


def _linear_regression(task: str, params: dict[str, Any], n_features: int, n_classes: int) -> Model:
    return SklearnModel(LinearRegression(fit_intercept=params["fit_intercept"]), task, n_classes)


def _ridge(task: str, params: dict[str, Any], n_features: int, n_classes: int) -> Model:
    return SklearnModel(Ridge(alpha=params["alpha"], fit_intercept=params["fit_intercept"]), task, n_classes)


def _mlp(task: str, params: dict[str, Any], n_features: int, n_classes: int) -> Model:
    return TorchMLPModel(task, params, n_features, n_classes)


@dataclass(frozen=True)
class Algorithm:
    """A catalogue entry: its name, the tasks it can do, and how to build an unfitted model."""

    name: str
    tasks: tuple[str, ...]
    build: Callable[[str, dict[str, Any], int, int], Model]


ALGORITHMS: dict[str, Algorithm] = {
    "logistic_regression": Algorithm(
        "logistic_regression", ALGORITHM_TASKS["logistic_regression"], _logistic_regression
    ),
    "random_forest": Algorithm("random_forest", ALGORITHM_TASKS["random_forest"], _random_forest),
    "gradient_boosting": Algorithm("gradient_boosting", ALGORITHM_TASKS["gradient_boosting"], _gradient_boosting),
    "linear_regression": Algorithm("linear_regression", ALGORITHM_TASKS["linear_regression"], _linear_regression),
    "ridge": Algorithm("ridge", ALGORITHM_TASKS["ridge"], _ridge),
    "mlp": Algorithm("mlp", ALGORITHM_TASKS["mlp"], _mlp),
}


def build_model(algorithm: str, task: str, params: dict[str, Any], n_features: int, n_classes: int) -> Model:
    """An unfitted model; `params` must already be validated (training.params.validate_params)."""
    check_algorithm(algorithm, task)
    return ALGORITHMS[algorithm].build(task, params, n_features, n_classes)


def check_servable(kind: str) -> None:
    """Refuse a download-only export before any of its files is opened."""
    if kind in ("onnx", "torchscript"):
        # An export is a file to download; a TorchScript file can run code, so no worker ever opens one.
        raise MLQError(
            f"this version is a {kind} export for download (GET .../artifact), not a model the "
            "workers serve; predict with the version it was exported from"
        )
