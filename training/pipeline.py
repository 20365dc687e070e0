"""From a CSV to a registered model version: prepare → fit → evaluate → register.

This is the one entry point that both the `mlq train --local` command and the worker's train task call, so a job
behaves the same in-process and through the queue.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.algorithms import FitHooks, build_model
from training.data import Preprocessing, Split, load_csv, prepare, save_preprocessor
from training.metrics import classification_metrics, regression_metrics
from training.params import CLASSIFICATION, validate_params
from training.registry import ModelRegistry

PREPROCESSOR_FILE = "preprocessor.skops"


class RegistrationDeclined(Exception):
    """Raised when `claim_registration` said no: another attempt of the same job registers (or registered) it."""


def library_versions() -> dict[str, str]:
    """Versions recorded in every manifest, so a model can be traced to the code that built it."""
    import numpy
    import pandas
    import sklearn
    import torch

    return {"python": platform.python_version(), "numpy": numpy.__version__, "pandas": pandas.__version__,
            "scikit-learn": sklearn.__version__, "torch": torch.__version__}


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
) -> dict[str, Any]:
    """Train one model on a CSV and register it as the next version of `model_name`.

    Raises an `MLQError` subclass for anything the user can fix (and `Cancelled` when `should_stop` fired, in
    which case nothing is registered).
    """
    started = time.monotonic()
    # Refuse bad names, algorithms and params before reading a byte of data: they are the cheapest checks.
    registry.check_name(model_name)
    if task is not None:
        validate_params(algorithm, params, task)
    prep, split_cfg = Preprocessing.from_dict(preprocessing), Split.from_dict(split)
    data = prepare(load_csv(Path(data_path)), target, features, task, prep, split_cfg)
    clean_params = validate_params(algorithm, params, data.task)

    x_train = data.preprocessor.transform(data.X_train)
    x_val = data.preprocessor.transform(data.X_val)
    x_test = data.preprocessor.transform(data.X_test)
    n_classes = len(data.classes) if data.classes is not None else 0
    model = build_model(algorithm, data.task, clean_params, x_train.shape[1], n_classes)
    hooks = FitHooks(on_progress=on_progress, should_stop=should_stop, checkpoint_dir=checkpoint_dir, device=device)
    epochs_run = model.fit(x_train, data.y_train, x_val, data.y_val, hooks)

    if data.task == CLASSIFICATION:
        metrics = classification_metrics(data.y_test, model.predict(x_test), model.predict_proba(x_test), n_classes)
    else:
        metrics = regression_metrics(data.y_test, model.predict(x_test))

    manifest: dict[str, Any] = {
        "name": model_name,
        "algorithm": algorithm,
        "task": data.task,
        "task_inferred": data.task_inferred,
        "target": target,
        "params": clean_params,
        "preprocessing": asdict(prep),
        "split": asdict(split_cfg),
        "metrics": metrics,
        "epochs_run": epochs_run,
        "features": [{"name": f, "dtype": data.feature_dtypes[f]} for f in data.features],
        "classes": data.classes,
        "model_kind": model.kind,
        "preprocessor_file": PREPROCESSOR_FILE,
        "dataset": {"id": dataset_id, "sha256": data.dataset_sha256, "rows_used": data.rows_used,
                    "rows": {"train": len(data.X_train), "validation": len(data.X_val), "test": len(data.X_test)}},
        "job_id": job_id,
        "library_versions": library_versions(),
        **(extra_manifest or {}),
    }
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
    return {
        "model": model_name,
        "version": registered["version"],
        "metrics": metrics,
        "epochs_run": epochs_run,
        "duration_s": round(time.monotonic() - started, 3),
        "task": data.task,
        "task_inferred": data.task_inferred,
    }

