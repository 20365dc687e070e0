"""Load a registered version as the Predictor its kind needs: mlqueue's own models, or an uploaded ONNX model.

Apart from training/predictor.py so that the ONNX predictor (a Predictor subclass) and the base class do not import
each other; onnxruntime loads only in a process that serves an ONNX version.
"""

from __future__ import annotations

from pathlib import Path

from training.predictor import Predictor
from training.registry import ModelRegistry


def load_predictor(
    registry: ModelRegistry, tenant: str, name: str, ref: str | int | None = None, device: str = "cpu"
) -> Predictor:
    """Resolve `ref` (version, alias, or None for production/latest), verify the files, then load them."""
    version = registry.resolve(tenant, name, ref)
    directory = Path(registry.verified_dir(tenant, name, version))
    manifest = registry.manifest(tenant, name, version)
    if manifest.get("model_kind") == "onnx":  # an uploaded ONNX model (POST /v1/models/{name}/versions)
        from training.onnx_predictor import OnnxPredictor

        return OnnxPredictor.from_version(directory, tenant, name, version, manifest, device)
    return Predictor.from_version(directory, tenant, name, version, manifest, device)
