"""Training and prediction in this process, on the local artifact store: what `mlq train/predict --local` run.

Imported only by those commands: it pulls in the training library (pandas, scikit-learn, torch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.pipeline import train_model
from training.predictors import load_predictor
from training.registry import ModelRegistry

TENANT = "default"  # the tenant the service uses without auth, so the service can serve a local model


def registry(home: Path, secret_key: str | None) -> ModelRegistry:
    # The same layout (and manifest signing key) as the service's, so a model trained here can be served there.
    return ModelRegistry(home.absolute() / "models", secret_key=secret_key or None)


def train(
    home: Path,
    secret_key: str | None,
    data: Path,
    model_name: str,
    device: str,
    on_progress: Callable[..., None],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Train and register a version; returns {"model", "version", "metrics", "epochs_run", "duration_s"}."""
    result = train_model(
        data_path=data,
        model_name=model_name,
        registry=registry(home, secret_key),
        tenant=TENANT,
        device=device,
        on_progress=on_progress,
        **options,
    )
    return {k: result[k] for k in ("model", "version", "metrics", "epochs_run", "duration_s")}


def predict(
    home: Path,
    secret_key: str | None,
    model: str,
    version: str | None,
    rows: list[Any],
    postprocess: dict[str, Any] | None,
) -> dict[str, Any]:
    """Predict with a registered version (None: production alias, else latest); returns the result object."""
    predictor = load_predictor(registry(home, secret_key), TENANT, model, version)
    return {"model": model, "version": predictor.version, "predictions": predictor.predict(rows, postprocess)}
