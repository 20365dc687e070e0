"""From a registered version to a smaller or exported one: load → rebuild the parent's splits → optimise → compare
→ register. The one entry point of the optimize job (worker/optimize_task.py), as train_model is of training.

The child is a new version of the same model whose manifest names its `parent`, the `optimization` (method,
params and what it did: sparsity, the teacher, the export's inputs) and the `comparison` (training/compare.py).
The parent's splits are rebuilt from its dataset with its own settings (the dataset's sha256 must still match), so
fine-tuning and distillation see only the parent's training rows and both sides are measured on its test rows.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.algorithms import SklearnModel, TorchMLPModel
from training.compare import REPEATS, Side, compare
from training.data import PreparedData, Preprocessing, Split, load_csv, prepare
from training.errors import Cancelled, DataError, RegistrationDeclined
from training.manifest import ModelManifest
from training.optimize_params import validate_optimize
from training.params import CLASSIFICATION
from training.pipeline import PREPROCESSOR_FILE, library_versions
from training.predictor import Predictor
from training.predictors import load_predictor
from training.registry import ModelRegistry

# Manifest keys that describe the version itself, never copied from the parent to the child.
_OWN_KEYS = (
    "version",
    "created_at",
    "files",
    "artifact",
    "hmac",
    "metrics",
    "job_id",
    "epochs_run",
    "library_versions",
    "parent",
    "optimization",
    "comparison",
    "export",
)


def parent_data(manifest: ModelManifest, data_path: Path) -> PreparedData:
    """The parent's train/validation/test split, rebuilt with the settings its manifest recorded."""
    df = load_csv(data_path)
    expected = (manifest.get("dataset") or {}).get("sha256")
    if expected and df.attrs["sha256"] != expected:
        raise DataError(
            f"the dataset of version {manifest.get('version')} changed since it was trained "
            f"(sha256 {df.attrs['sha256'][:12]}… ≠ {expected[:12]}…); the parent's test split cannot "
            "be rebuilt, so the comparison would not be honest"
        )
    return prepare(
        df,
        manifest["target"],
        [f["name"] for f in manifest["features"]],
        manifest["task"],
        Preprocessing(**manifest.get("preprocessing", {})),
        Split(**manifest.get("split", {})),
    )


def _scores(model: Any, task: str, x: np.ndarray) -> np.ndarray:
    if task == CLASSIFICATION:
        return np.asarray(model.predict_proba(x), dtype=np.float64)
    return np.asarray(model.predict(x), dtype=np.float64)


def _model_side(version: int | None, size: int, preprocessor: Any, model: Any, task: str) -> Side:
    def transform(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(preprocessor.transform(frame), dtype=np.float32)

    return Side(version, size, lambda frame: _scores(model, task, transform(frame)), lambda x: _scores(model, task, x))


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def optimize_version(
    *,
    registry: ModelRegistry,
    tenant: str,
    name: str,
    version: int,
    method: str,
    params: dict[str, Any] | None,
    data_path: Path,
    device: str = "auto",
    job_id: str | None = None,
    on_progress: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    claim_registration: Callable[[], bool] | None = None,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    """Register the optimised child of `name` v`version`; return the job result (comparison included)."""
    started = time.monotonic()
    report = on_progress or (lambda **_: None)
    manifest = registry.manifest(tenant, name, version)
    clean = validate_optimize(method, params, manifest)
    parent = load_predictor(registry, tenant, name, version, device="cpu")  # checksums and HMAC first
    report(fraction=0.02, message=f"rebuilding the splits of version {version}")
    data = parent_data(manifest, data_path)
    pre, task = parent.preprocessor, parent.task
    x_train, x_val, x_test = (
        np.asarray(pre.transform(f), dtype=np.float32) for f in (data.X_train, data.X_val, data.X_test)
    )
    n_classes = len(parent.classes or [])
    parent_side = _model_side(version, int(manifest["artifact"]["size_bytes"]), pre, parent.model, task)

    staging_root = Path(registry.root)
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=staging_root))
    try:
        child_manifest = {k: copy.deepcopy(v) for k, v in manifest.items() if k not in _OWN_KEYS}
        details: dict[str, Any] = {}
        parent_dir = registry.verified_dir(tenant, name, version)
        if method == "export":
            child_side, details = _export(clean["format"], parent, x_train.shape[1], staging)
            child_manifest.update(model_kind=clean["format"], export=details, kind="export")
            child_manifest.pop("preprocessor_file", None)
        else:
            shutil.copyfile(
                parent_dir / manifest.get("preprocessor_file", PREPROCESSOR_FILE), staging / PREPROCESSOR_FILE
            )
            child, details = _optimise(method, clean, parent, data, x_train, x_val, device, on_progress, should_stop)
            child.save(staging)
            child_manifest.update(model_kind=child.kind, preprocessor_file=PREPROCESSOR_FILE)
            if method == "distill":
                child_manifest.update(algorithm="mlp", params={"hidden_layers": clean["hidden_layers"]})
            child_side = _model_side(None, 0, pre, child, task)
        child_side.artifact_bytes = _size(staging)
        if should_stop is not None and should_stop():
            raise Cancelled("optimisation cancelled before the comparison; nothing registered")
        report(fraction=0.9, message="measuring parent and child (size, latency, test metrics)")
        comparison = compare(parent_side, child_side, task, data.X_test, x_test, data.y_test, n_classes, repeats)
        child_manifest.update(
            parent=version,
            optimization={"method": method, "params": clean, **details},
            comparison=comparison,
            metrics=comparison["child"]["metrics"],
            job_id=job_id,
            library_versions=library_versions(),
        )
        if claim_registration is not None and not claim_registration():
            raise RegistrationDeclined(f"job {job_id}: another attempt owns the registration; nothing registered")
        registered = registry.register(tenant, name, staging, child_manifest)
        # The last progress is what a finished job shows: say how it ended, not what it was last doing.
        report(fraction=1.0, message=f"registered version {registered['version']} ({method} of version {version})")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    comparison["child"]["version"] = registered["version"]
    return {
        "model": name,
        "version": registered["version"],
        "parent": version,
        "method": method,
        "params": clean,
        "optimization": registered["optimization"],
        "metrics": registered["metrics"],
        "comparison": comparison,
        "duration_s": round(time.monotonic() - started, 3),
    }


def _optimise(
    method: str,
    p: dict[str, Any],
    parent: Predictor,
    data: PreparedData,
    x_train: np.ndarray,
    x_val: np.ndarray,
    device: str,
    on_progress: Callable[..., None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[Any, dict[str, Any]]:
    """The servable child model of quantize_dynamic, prune or distill, and what the method reports."""
    if method == "quantize_dynamic":
        from training.quantized import QuantizedMLPModel

        assert isinstance(parent.model, TorchMLPModel)
        child = QuantizedMLPModel.from_float(parent.model, per_channel=p["per_channel"])
        return child, {"weights": "int8", "activations": "int8, quantized per batch at run time"}
    if method == "prune":
        from training.prune import prune_mlp

        assert isinstance(parent.model, TorchMLPModel)
        pruned = copy.deepcopy(parent.model)  # the parent stays as it is: it is measured beside the child
        report = prune_mlp(
            pruned,
            amount=p["amount"],
            structured=p["structured"],
            finetune_epochs=p["finetune_epochs"],
            lr=p["lr"],
            batch_size=p["batch_size"],
            seed=p["seed"],
            X_train=x_train,
            y_train=data.y_train,
            X_val=x_val,
            y_val=data.y_val,
            device=device,
            on_progress=on_progress,
            should_stop=should_stop,
        )
        return pruned, {**report, "storage": "dense (see training/prune.py)"}
    if method == "distill":
        from training.distill import distill, teacher_summary

        teacher = parent.model.predict_proba(x_train)
        assert teacher is not None
        student = distill(
            teacher,
            x_train,
            data.y_train,
            hidden_layers=p["hidden_layers"],
            epochs=p["epochs"],
            temperature=p["temperature"],
            alpha=p["alpha"],
            lr=p["lr"],
            batch_size=p["batch_size"],
            seed=p["seed"],
            device=device,
            on_progress=on_progress,
            should_stop=should_stop,
        )
        return student, {
            "teacher": {
                "version": parent.version,
                "algorithm": parent.manifest.get("algorithm"),
                **teacher_summary(teacher),
            }
        }
    raise ValueError(f"unknown method {method!r}")


def _export(fmt: str, parent: Predictor, n_features: int, staging: Path) -> tuple[Side, dict[str, Any]]:
    """The exported file in `staging`, and a Side that runs it the way a user outside mlqueue would."""
    from training.export import ONNX_FILE, TORCHSCRIPT_FILE, export_onnx, export_torchscript, onnx_feeds

    pre, task, model = parent.preprocessor, parent.task, parent.model

    def transform(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(pre.transform(frame), dtype=np.float32)

    if fmt == "torchscript":
        assert isinstance(model, TorchMLPModel)
        info, traced = export_torchscript(model, staging / TORCHSCRIPT_FILE)
        run = _torch_runner(traced, task)
        return Side(None, 0, lambda frame: run(transform(frame)), run), info
    import onnxruntime as ort

    assert isinstance(model, TorchMLPModel | SklearnModel)
    info = export_onnx(pre, model, parent.features, parent.feature_dtypes, task, n_features, staging / ONNX_FILE)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the comparison is one thread, both sides
    session = ort.InferenceSession(str(staging / ONNX_FILE), options, providers=["CPUExecutionProvider"])

    def run_onnx(feeds: dict[str, Any]) -> np.ndarray:
        out = np.asarray(session.run(None, feeds)[0], dtype=np.float64)
        return out if task == CLASSIFICATION else out.reshape(-1)

    if info["inputs"] == "raw":

        def predict(frame: pd.DataFrame) -> np.ndarray:
            return run_onnx(onnx_feeds(frame, parent.features, parent.feature_dtypes))

        return Side(None, 0, predict, None), info
    return (
        Side(None, 0, lambda frame: run_onnx({"features": transform(frame)}), lambda x: run_onnx({"features": x})),
        info,
    )


def _torch_runner(module: Any, task: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = module(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy().astype(np.float64)
        return out if task == CLASSIFICATION else out.reshape(-1)

    return run
