"""The benchmark's bare baseline serves the registered version's own weights: the Predictor's probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

from bench.baselines.bare import BareModel
from training.pipeline import train_model
from training.predictors import load_predictor
from training.registry import ModelRegistry


def test_the_bare_network_gives_the_predictors_labels_and_probabilities(tmp_path: Path) -> None:
    X, y = make_classification(n_samples=300, n_features=8, n_informative=4, n_classes=3, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)]).assign(y=y)
    frame.to_csv(tmp_path / "data.csv", index=False)
    registry = ModelRegistry(tmp_path / "models")
    train_model(
        data_path=tmp_path / "data.csv",
        target="y",
        algorithm="mlp",
        model_name="m",
        registry=registry,
        params={"hidden_layers": [16, 16], "epochs": 2, "seed": 0},
        device="cpu",
    )
    rows = [[float(v) for v in row] for row in X[:20]]
    bare = BareModel(registry, "m").predict(rows)
    served = load_predictor(registry, "default", "m").predict(rows)
    assert [p["label"] for p in bare] == [p["label"] for p in served]
    by_class = [[p["proba"][str(c)] for c in range(3)] for p in served]  # the Predictor lists the likeliest first
    np.testing.assert_allclose([p["proba"] for p in bare], by_class, atol=1e-5)
