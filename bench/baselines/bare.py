"""The network as the tutorials serve it: what BENCHMARK.md calls a bare baseline.

The registered version's safetensors go into a plain torch module built from its architecture.json; a request's
JSON list becomes a float32 tensor, one forward pass, softmax and argmax out. No Predictor, no pandas, no
preprocessing objects: the network was trained on standardised features, so the scaler's means and scales are
read once at start and applied as two tensor operations (~2 µs), as a user's own app would keep them.
`BENCH_BASELINE=predictor` serves through training.predictor.Predictor instead (the extra, labelled rows).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from training.predictors import load_predictor
from training.registry import ModelRegistry

TENANT = "default"


class BareModel:
    """One registered MLP version, served the way the Flask and Flask + Celery tutorials serve a network."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        from training.data import load_preprocessor  # start-up only: the request path never touches sklearn

        self.version = registry.resolve(TENANT, name)
        directory = Path(registry.verified_dir(TENANT, name, self.version))
        manifest = registry.manifest(TENANT, name, self.version)
        arch = json.loads((directory / "architecture.json").read_text())
        layers: list[nn.Module] = []
        width = arch["input_dim"]
        for hidden in arch["hidden_layers"]:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, arch["output_dim"]))
        self.net = nn.Sequential(*layers)
        weights = load_file(str(directory / "model.safetensors"))
        self.net.load_state_dict({key.removeprefix("layers."): value for key, value in weights.items()})
        # BENCH_DEVICE (G1, `make gpu-check`): the same network on cuda, the way a tutorial moves it there.
        self.device = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
        self.net.to(self.device).eval()
        scaler = (
            load_preprocessor(directory / manifest["preprocessor_file"])
            .named_transformers_["number"]
            .named_steps.get("scale")
        )
        n_features = arch["input_dim"]  # a version trained with preprocessing.scale=false: identity
        self.mean = torch.tensor(scaler.mean_ if scaler else [0.0] * n_features, dtype=torch.float32)
        self.scale = torch.tensor(scaler.scale_ if scaler else [1.0] * n_features, dtype=torch.float32)
        classes = manifest["classes"]
        assert classes is not None, f"{name} is not a classifier; the bare baseline serves classifiers (softmax)"
        self.classes = classes
        self.mean, self.scale = self.mean.to(self.device), self.scale.to(self.device)

    def predict(self, inputs: list[list[float]]) -> list[dict[str, Any]]:
        x = torch.tensor(inputs, dtype=torch.float32).to(self.device)
        with torch.inference_mode():
            proba = torch.softmax(self.net((x - self.mean) / self.scale), dim=1).cpu()
        labels = proba.argmax(dim=1).tolist()
        return [
            {"row": i, "label": self.classes[label], "proba": p}
            for i, (label, p) in enumerate(zip(labels, proba.tolist(), strict=True))
        ]


class PredictorModel:
    """The same version through mlqueue's Predictor (preprocessing, post-processing): the labelled extra rows."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:

        self.predictor = load_predictor(registry, TENANT, name)
        self.version = self.predictor.version

    def predict(self, inputs: list[Any], postprocess: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.predictor.predict(inputs, postprocess)


def load_models() -> dict[str, BareModel | PredictorModel]:
    """The models named by BENCH_MODELS from the registry at MLQ_HOME, one torch thread per MLQ_TORCH_THREADS."""
    from store.settings import Settings

    settings = Settings.from_env()
    torch.set_num_threads(settings.torch_threads)
    registry = ModelRegistry(settings.models_dir, secret_key=settings.secret_key or None)
    kind = PredictorModel if os.environ.get("BENCH_BASELINE", "bare") == "predictor" else BareModel
    return {name: kind(registry, name) for name in os.environ.get("BENCH_MODELS", "mlp32,mlp-wide").split(",")}
