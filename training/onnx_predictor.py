"""The Predictor of an uploaded ONNX version (manifest `model_kind: onnx`): onnxruntime instead of torch/sklearn.

training.predictors.load_predictor hands a version of this kind here after its files were verified (sha256,
HMAC), so the worker's model cache, the batching consumer and batch prediction serve it unchanged: `scores` takes
the rows of many requests in one call (numeric rows stacked into one run; text rows tokenized and run per length
bucket) and the inherited `postprocess` does labels, top-k, threshold and sort. A text row the tokenizer had to
cut to the model's maximum length is said so in its prediction (`"truncated": true`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from training.manifest import ModelManifest
from training.onnx_model import OnnxModel, providers_for, to_scores
from training.predictor import Predictor


class TextScores(np.ndarray):
    """Scores that carry, per row, whether its text was truncated; a slice of rows keeps its rows' flags, so the
    flags follow each request's share of a batch (worker/inference.py slices the batch's scores per request)."""

    truncated: np.ndarray | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.truncated = getattr(obj, "truncated", None)

    def __getitem__(self, key: Any) -> Any:
        out = super().__getitem__(key)
        if isinstance(out, TextScores):
            flags = self.truncated
            out.truncated = flags[key] if flags is not None and isinstance(key, slice) else None
        return out


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"  # the GPU the launcher pinned, if any
    return device


class OnnxPredictor(Predictor):
    """An uploaded ONNX version: the rows' features (or text column) → onnxruntime → scores → post-processing."""

    def __init__(self, *, tenant: str, name: str, version: int, manifest: ModelManifest, runner: OnnxModel) -> None:
        # Predictor's own __init__ compiles a preprocessor; an ONNX graph has its preprocessing inside.
        self.tenant, self.name, self.version, self.manifest = tenant, name, version, manifest
        self.preprocessor = None
        self.compiled = None
        self.runner = runner
        self.task = manifest["task"]
        self.classes = manifest.get("classes")
        self.features = [f["name"] for f in manifest["features"]]
        self.feature_dtypes = {f["name"]: f["dtype"] for f in manifest["features"]}
        spec: dict[str, Any] = manifest["onnx"]
        self.output_kind: str = spec["output_kind"]

    @classmethod
    def from_version(
        cls, directory: Path, tenant: str, name: str, version: int, manifest: ModelManifest, device: str = "cpu"
    ) -> OnnxPredictor:
        providers = providers_for(_device(device), ort.get_available_providers())
        # The same intra-op threads as the torch models of this process (MLQ_TORCH_THREADS, set by the worker).
        runner = OnnxModel(
            directory,
            manifest["onnx"],
            [f["name"] for f in manifest["features"]],
            providers=providers,
            threads=torch.get_num_threads(),
        )
        return cls(tenant=tenant, name=name, version=version, manifest=manifest, runner=runner)

    def scores(self, rows: list[Any]) -> np.ndarray:
        raw, truncated = self.runner.outputs(rows)
        if len(raw) == 0:
            width = len(self.classes) if self.task == "classification" and self.classes else None
            return np.zeros((0, width) if width else (0,))
        scores = to_scores(raw, self.task, self.output_kind)
        if truncated is None:
            return scores
        flagged = scores.view(TextScores)
        flagged.truncated = np.asarray(truncated, dtype=bool)
        return flagged

    def postprocess(self, scores: np.ndarray, options: dict[str, Any]) -> list[dict[str, Any]]:
        flags = getattr(scores, "truncated", None)
        predictions = super().postprocess(np.asarray(scores), options)
        if flags is not None and len(flags) == len(scores):
            for p in predictions:
                if flags[p["row"]]:
                    p["truncated"] = True
        return predictions

    def memory_bytes(self) -> int:
        """What this version holds in memory, roughly: its weights (the ONNX file and any external data)."""
        files = self.manifest.get("files") or {}
        return sum(int(f["size_bytes"]) for f in files.values())
