"""Fine-tuning: an mlp training that starts from a registered version's weights instead of random ones.

The new version keeps the base version's preprocessor (the same input columns, scaling and categories, so the
weights mean the same thing) and must have the same features, task and classes; anything else is refused with
an error that says what differs. Trained on new data, it becomes the next version, like any training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from training.algorithms import ARCHITECTURE_FILE, WEIGHTS_FILE
from training.data import load_preprocessor
from training.errors import InvalidParams, ResourceNotFound
from training.registry import ModelRegistry


def _refuse(msg: str, key: str = "warm_start") -> InvalidParams:
    return InvalidParams(f"warm_start: {msg}", errors=[{"loc": [key], "msg": msg}])


def check_request(warm_start: Any) -> tuple[str, int | str | None]:
    """(model, version) of a warm_start object {"model": name, "version": 3 | "production" | None}."""
    if not isinstance(warm_start, dict) or set(warm_start) - {"model", "version"} or "model" not in warm_start:
        raise _refuse('must be {"model": NAME, "version": NUMBER or alias}')
    return warm_start["model"], warm_start.get("version")


class WarmStart:
    """The base version: its manifest, its fitted preprocessor and its weights, loaded after verification."""

    def __init__(self, registry: ModelRegistry, tenant: str, warm_start: dict[str, Any]) -> None:
        name, ref = check_request(warm_start)
        try:
            version = registry.resolve(tenant, name, ref)  # None: production, else the latest
        except ResourceNotFound as exc:
            raise _refuse(exc.message) from None
        self.name, self.version = name, version
        self.manifest = registry.manifest(tenant, name, version)
        if self.manifest.get("algorithm") != "mlp":
            raise _refuse(
                f"model {name!r} version {version} is a {self.manifest.get('algorithm')}, not an mlp; "
                "only mlp versions can be fine-tuned"
            )
        if self.manifest.get("model_kind", "torch") != "torch":  # the API refuses these at submit too
            raise _refuse(
                f"model {name!r} version {version} is a {self.manifest.get('model_kind')} copy, not a trainable mlp"
            )
        directory = Path(registry.verified_dir(tenant, name, version))
        self.preprocessor = load_preprocessor(directory / self.manifest.get("preprocessor_file", "preprocessor.skops"))
        self.state: dict[str, torch.Tensor] = load_file(str(directory / WEIGHTS_FILE))
        self.architecture = json.loads((directory / ARCHITECTURE_FILE).read_text())

    def apply(self, model: Any) -> None:
        """Give an unfitted TorchMLPModel the base weights (and, for regression, the base's target scaling)."""
        model.initial_state = self.state
        model.architecture.update(
            target_mean=self.architecture.get("target_mean"), target_std=self.architecture.get("target_std")
        )

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "version": self.version, "job_id": self.manifest.get("job_id")}

    def check_compatible(
        self, *, algorithm: str, task: str, features: list[str], classes: list[Any] | None, hidden_layers: list[int]
    ) -> None:
        """Refuse a training that cannot continue from these weights, saying what differs."""
        base = f"model {self.name!r} version {self.version}"
        if algorithm != "mlp":
            raise _refuse(f"warm_start continues an mlp; this training's algorithm is {algorithm!r}", "algorithm")
        if task != self.manifest.get("task"):
            raise _refuse(f"{base} does {self.manifest.get('task')}, this training does {task}")
        base_features = [f["name"] for f in self.manifest.get("features", [])]
        if features != base_features:
            raise _refuse(f"the features must be those of {base}, in its order: {base_features}; got {features}")
        if classes != self.manifest.get("classes"):
            raise _refuse(
                f"the target's classes must be those of {base}: {self.manifest.get('classes')}; this data has {classes}"
            )
        base_layers = (self.manifest.get("params") or {}).get("hidden_layers")
        if list(hidden_layers) != list(base_layers or []):
            raise _refuse(f"params.hidden_layers must be those of {base}: {base_layers}; got {hidden_layers}", "params")
