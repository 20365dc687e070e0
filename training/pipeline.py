"""From a CSV to a registered model version: prepare → fit → evaluate → register.

This is the one entry point that both the `mlq train --local` command and the worker's train task call, so a job
behaves the same in-process and through the queue.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.algorithms import FitHooks, build_model
from training.cv import check_folds
from training.data import Preprocessing, Split, load_csv, prepare, save_preprocessor
from training.drift_reference import for_training as drift_reference
from training.errors import RegistrationDeclined
from training.manifest import TrainResult
from training.metrics import classification_metrics, regression_metrics
from training.params import CLASSIFICATION, validate_params
from training.registry import ModelRegistry
from training.report import further_report
from training.warm_start import WarmStart

PREPROCESSOR_FILE = "preprocessor.skops"
SAVED_MANIFEST = "manifest.json"  # beside the artifact/ folder of a model saved with save_to (a search trial)


def library_versions() -> dict[str, str]:
    """Versions recorded in every manifest, so a model can be traced to the code that built it."""
    import numpy
    import pandas
    import sklearn
    import torch

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
    }


def train_model(
    *,
    data_path: Path,
    target: str,
    algorithm: str,
    model_name: str,
    registry: ModelRegistry,
    tenant: str = "default",
    task: str | None = None,
    features: list[str] | None = None,
    params: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    device: str = "auto",
    checkpoint_dir: Path | None = None,
    on_progress: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dataset_id: str | None = None,
    job_id: str | None = None,
    extra_manifest: dict[str, Any] | None = None,
    claim_registration: Callable[[], bool] | None = None,
    warm_start: dict[str, Any] | None = None,
    save_to: Path | None = None,
) -> TrainResult:
    """Train one model on a CSV and register it as the next version of `model_name`.

    With `save_to` (a search trial) nothing is registered: the files go to `save_to/artifact/` and the manifest
    to `save_to/manifest.json`, for the search to register the best trial later. `warm_start` ({"model",
    "version"}) continues an mlp from a registered version's weights (training/warm_start.py).

    Raises an `MLQError` subclass for anything the user can fix (and `Cancelled` when `should_stop` fired, in
    which case nothing is registered).
    """
    started = time.monotonic()
    # Refuse bad names, algorithms and params before reading a byte of data: they are the cheapest checks.
    registry.check_name(model_name)
    if task is not None:
        validate_params(algorithm, params, task)
    split = dict(split or {})
    cv_folds = check_folds(split.pop("cv", None))  # ours, not the train/validation/test Split's
    prep, split_cfg = Preprocessing.from_dict(preprocessing), Split.from_dict(split)
    data = prepare(load_csv(Path(data_path)), target, features, task, prep, split_cfg)
    clean_params = validate_params(algorithm, params, data.task)
    base = WarmStart(registry, tenant, warm_start) if warm_start is not None else None
    if base is not None:
        base.check_compatible(
            algorithm=algorithm,
            task=data.task,
            features=data.features,
            classes=data.classes,
            hidden_layers=clean_params.get("hidden_layers") or [],
        )
        data.preprocessor = base.preprocessor  # the base's input space, or its weights mean nothing

    x_train = data.preprocessor.transform(data.X_train)
    x_val = data.preprocessor.transform(data.X_val)
    x_test = data.preprocessor.transform(data.X_test)
    n_classes = len(data.classes) if data.classes is not None else 0
    model = build_model(algorithm, data.task, clean_params, x_train.shape[1], n_classes)
    if base is not None:
        base.apply(model)
    hooks = FitHooks(on_progress=on_progress, should_stop=should_stop, checkpoint_dir=checkpoint_dir, device=device)
    epochs_run = model.fit(x_train, data.y_train, x_val, data.y_val, hooks)

    if data.task == CLASSIFICATION:
        metrics = classification_metrics(data.y_test, model.predict(x_test), model.predict_proba(x_test), n_classes)
    else:
        metrics = regression_metrics(data.y_test, model.predict(x_test))
    report = further_report(
        model,
        data,
        algorithm=algorithm,
        params=clean_params,
        seed=split_cfg.seed,
        cv_folds=cv_folds,
        device=device,
        should_stop=should_stop,
        on_progress=on_progress,
    )
    if "per_class" in report:
        metrics["per_class"] = report.pop("per_class")

    manifest: dict[str, Any] = {
        "name": model_name,
        "algorithm": algorithm,
        "task": data.task,
        "task_inferred": data.task_inferred,
        "target": target,
        "params": clean_params,
        "preprocessing": asdict(prep),
        "split": {**asdict(split_cfg), **({"cv": cv_folds} if cv_folds else {})},
        "metrics": metrics,
        "epochs_run": epochs_run,
        "features": [{"name": f, "dtype": data.feature_dtypes[f]} for f in data.features],
        "classes": data.classes,
        "model_kind": model.kind,
        "preprocessor_file": PREPROCESSOR_FILE,
        "dataset": {
            "id": dataset_id,
            "sha256": data.dataset_sha256,
            "rows_used": data.rows_used,
            "rows": {"train": len(data.X_train), "validation": len(data.X_val), "test": len(data.X_test)},
        },
        "job_id": job_id,
        "library_versions": library_versions(),
        # What live inputs and predictions are compared with (GET .../drift): the training split's bins.
        "drift_reference": drift_reference(
            model, data.X_train, {f: data.feature_dtypes[f] for f in data.features}, x_test, data.classes
        ),
        **report,
        **({"warm_start": base.describe()} if base is not None else {}),
        **(extra_manifest or {}),
    }
    if save_to is not None:
        return _save_trial(Path(save_to), data, model, manifest, started)
    # Stage the artifact files next to the registry root (same filesystem), so registering is a rename.
    staging_root = Path(registry.root)
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=staging_root))
    try:
        save_preprocessor(data.preprocessor, staging / PREPROCESSOR_FILE)
        model.save(staging)
        if claim_registration is not None and not claim_registration():
            raise RegistrationDeclined(f"job {job_id}: another attempt owns the registration; nothing registered")
        registered = registry.register(tenant, model_name, staging, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result: TrainResult = {
        "model": model_name,
        "version": registered["version"],
        "metrics": metrics,
        "epochs_run": epochs_run,
        "duration_s": round(time.monotonic() - started, 3),
        "task": data.task,
        "task_inferred": data.task_inferred,
        "warnings": report["warnings"],
    }
    if "cv" in report:
        result["cv"] = report["cv"]
    return result


def _save_trial(save_to: Path, data: Any, model: Any, manifest: dict[str, Any], started: float) -> TrainResult:
    """Write a trained model and its manifest under `save_to` without registering it (a search trial)."""
    artifact = save_to / "artifact"
    shutil.rmtree(save_to, ignore_errors=True)  # a resumed trial overwrites what an earlier attempt left
    artifact.mkdir(parents=True)
    save_preprocessor(data.preprocessor, artifact / PREPROCESSOR_FILE)
    model.save(artifact)
    (save_to / SAVED_MANIFEST).write_text(json.dumps(manifest, indent=1))
    result: TrainResult = {
        "model": manifest["name"],
        "version": None,
        "metrics": manifest["metrics"],
        "epochs_run": manifest["epochs_run"],
        "duration_s": round(time.monotonic() - started, 3),
        "task": data.task,
        "task_inferred": data.task_inferred,
        "warnings": manifest["warnings"],
    }
    if "cv" in manifest:
        result["cv"] = manifest["cv"]
    return result
