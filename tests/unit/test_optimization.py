"""Optimisation in-process: which methods apply, int8 storage, exports that match the service, integrity.

The accuracy bounds of quantize, prune and distill are checked through the real service in
tests/integration/test_optimize_jobs.py; these tests cover what needs no worker, on tiny models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from mlqueue.comparison import comparison_rows
from training.errors import ArtifactTampered, InvalidParams, MLQError
from training.manifest import ModelManifest
from training.optimize import optimize_version
from training.optimize_params import applicable, validate_optimize
from training.pipeline import train_model
from training.predictors import load_predictor
from training.quantized import QuantizedMLPModel
from training.registry import ModelRegistry

TENANT = "default"


@pytest.fixture(scope="module")
def messy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Numbers with gaps and a text column with gaps: the preprocessing has work to do in the ONNX graph too."""
    rng = np.random.default_rng(0)
    n = 240
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n).round(3),
            "b": rng.normal(size=n).round(3),
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )
    label = np.where(frame["a"] + (frame["colour"] == "red") * 1.5 - frame["b"] > 0.4, "yes", "no")
    frame.loc[::17, "a"] = np.nan
    frame.loc[::23, "colour"] = None
    frame["label"] = label
    path = tmp_path_factory.mktemp("optimize-unit") / "messy.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def registry(messy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """mlp v1 (torch), forest v1 (random forest), ridge-ish regression mlp `amount` v1."""
    reg = ModelRegistry(tmp_path_factory.mktemp("optimize-registry"), secret_key="k")
    train_model(
        data_path=messy_csv,
        target="label",
        algorithm="mlp",
        model_name="mlp",
        registry=reg,
        params={"epochs": 5, "hidden_layers": [16], "lr": 0.01},
        device="cpu",
        dataset_id="ds_x",
    )
    train_model(
        data_path=messy_csv,
        target="label",
        algorithm="random_forest",
        model_name="forest",
        registry=reg,
        params={"n_estimators": 10},
        dataset_id="ds_x",
    )
    train_model(
        data_path=messy_csv,
        target="a",
        algorithm="mlp",
        model_name="amount",
        registry=reg,
        task="regression",
        features=["b", "colour"],
        preprocessing={"missing": "drop"},
        params={"epochs": 3, "hidden_layers": [8]},
        device="cpu",
        dataset_id="ds_x",
    )
    return reg


def optimize(
    registry: ModelRegistry, data: Path, name: str, version: int, method: str, **params: Any
) -> dict[str, Any]:
    return optimize_version(
        registry=registry,
        tenant=TENANT,
        name=name,
        version=version,
        method=method,
        params=params,
        data_path=data,
        device="cpu",
        job_id=f"job_{method}",
        repeats=3,
    )


def raw_rows(path: Path, features: list[str]) -> list[dict[str, Any]]:
    frame = pd.read_csv(path)[features]
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def onnx_scores(session: ort.InferenceSession, rows: list[dict[str, Any]], manifest: ModelManifest) -> np.ndarray:
    """What a user outside mlqueue writes: one [n, 1] input per column, NaN / "" for a gap."""
    feeds = {}
    for feature in manifest["features"]:
        name = feature["name"]
        values = [row[name] for row in rows]
        if feature["dtype"] == "number":
            feeds[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float32).reshape(-1, 1)
        else:
            feeds[name] = np.array(["" if v is None else str(v) for v in values], dtype=object).reshape(-1, 1)
    return np.asarray(session.run(None, feeds)[0])


def test_each_model_kind_is_offered_exactly_the_methods_that_apply_to_it() -> None:
    assert set(applicable({"model_kind": "torch", "task": "classification"})) == {
        "quantize_dynamic",
        "prune",
        "distill",
        "export",
    }
    assert set(applicable({"model_kind": "torch", "task": "regression"})) == {"quantize_dynamic", "prune", "export"}
    assert applicable({"model_kind": "sklearn", "task": "classification"}) == {"distill": (), "export": ("onnx",)}
    assert applicable({"model_kind": "torch_int8", "task": "classification"}) == {"distill": (), "export": ("onnx",)}
    assert applicable({"model_kind": "torchscript", "task": "classification"}) == {}


def test_quantizing_a_random_forest_is_refused_naming_the_methods_that_apply() -> None:
    forest = {"model_kind": "sklearn", "task": "classification", "algorithm": "random_forest", "version": 1}
    with pytest.raises(InvalidParams) as refused:
        validate_optimize("quantize_dynamic", {}, forest)
    assert "methods that apply: distill, export (onnx)" in refused.value.message
    with pytest.raises(InvalidParams, match="torchscript"):
        validate_optimize("export", {"format": "torchscript"}, forest)


def test_method_params_are_checked_and_defaulted_like_training_params() -> None:
    mlp = {"model_kind": "torch", "task": "classification"}
    assert validate_optimize("prune", {"amount": 0.3}, mlp) == {
        "amount": 0.3,
        "structured": False,
        "finetune_epochs": 3,
        "lr": 0.001,
        "batch_size": 64,
        "seed": 0,
    }
    with pytest.raises(InvalidParams) as refused:
        validate_optimize("prune", {"amount": 1.5, "epochs": 3}, mlp)
    assert [e["loc"] for e in refused.value.errors] == [["epochs"], ["amount"]]


def test_a_quantized_version_stores_int8_weights_and_loads_back_to_the_same_predictions(
    registry: ModelRegistry, messy_csv: Path
) -> None:
    result = optimize(registry, messy_csv, "mlp", 1, "quantize_dynamic")
    manifest = registry.manifest(TENANT, "mlp", result["version"])
    assert manifest["model_kind"] == "torch_int8" and manifest["parent"] == 1
    assert manifest["optimization"]["method"] == "quantize_dynamic"
    assert set(manifest["comparison"]) >= {"parent", "child", "ratios", "metric_deltas"}
    # The child serves the parent's inputs: its drift is measured against the parent's reference.
    assert manifest["drift_reference"] == registry.manifest(TENANT, "mlp", 1)["drift_reference"]
    directory = registry.verified_dir(TENANT, "mlp", result["version"])
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "model.safetensors"))
    assert tensors["layers.0.weight_int8"].dtype == torch.int8
    assert json.loads((directory / "architecture.json").read_text())["quantization"]["per_channel"] is True
    predictor = load_predictor(registry, TENANT, "mlp", result["version"])
    rows = raw_rows(messy_csv, predictor.features)[:20]
    again = QuantizedMLPModel.load(directory)
    x = predictor.preprocessor.transform(pd.DataFrame(rows))
    np.testing.assert_array_equal(predictor.model.predict_proba(x), again.predict_proba(x))


def test_a_tampered_quantized_artifact_is_refused_before_anything_is_loaded(
    registry: ModelRegistry, messy_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = optimize(registry, messy_csv, "mlp", 1, "quantize_dynamic")["version"]
    weights = registry.root / TENANT / "mlp" / str(version) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))

    def must_not_load(*_: Any, **__: Any) -> Any:
        raise AssertionError("a tampered artifact was opened")

    monkeypatch.setattr(QuantizedMLPModel, "load", must_not_load)
    with pytest.raises(ArtifactTampered, match="model.safetensors"):
        load_predictor(registry, TENANT, "mlp", version)


def test_int8_tensors_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    (tmp_path / "architecture.json").write_text(
        json.dumps(
            {
                "input_dim": 4,
                "hidden_layers": [3],
                "output_dim": 2,
                "task": "classification",
                "target_mean": None,
                "target_std": None,
                "quantization": {"per_channel": True},
            }
        )
    )
    tensors = {
        f"layers.{i}.{p}": torch.zeros(1) for i in (0, 2) for p in ("weight_int8", "scales", "zero_points", "bias")
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ArtifactTampered, match="do not fit"):
        QuantizedMLPModel.load(tmp_path)


@pytest.mark.parametrize(("name", "target_tolerance"), [("mlp", 1e-5), ("forest", 1e-5), ("amount", 1e-4)])
def test_an_onnx_export_with_its_preprocessing_matches_the_service_on_raw_rows_with_gaps(
    registry: ModelRegistry, messy_csv: Path, name: str, target_tolerance: float
) -> None:
    result = optimize(registry, messy_csv, name, 1, "export", format="onnx")
    manifest = registry.manifest(TENANT, name, result["version"])
    assert manifest["model_kind"] == "onnx" and manifest["export"]["inputs"] == "raw"
    assert list(manifest["files"]) == ["model.onnx"]
    session = ort.InferenceSession(str(registry.verified_dir(TENANT, name, result["version"]) / "model.onnx"))
    parent = load_predictor(registry, TENANT, name, 1)
    rows = raw_rows(messy_csv, parent.features)
    if parent.task == "classification":
        expected = parent.scores(rows)
    else:
        rows = [r for r in rows if r["b"] is not None]
        expected = parent.scores(rows).reshape(-1, 1)
    np.testing.assert_allclose(onnx_scores(session, rows, manifest), expected, atol=target_tolerance, rtol=1e-5)


def test_an_export_version_is_never_loaded_as_a_model_and_torchscript_is_never_opened(
    registry: ModelRegistry, messy_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = optimize(registry, messy_csv, "mlp", 1, "export", format="torchscript")["version"]
    manifest = registry.manifest(TENANT, "mlp", version)
    assert manifest["model_kind"] == "torchscript" and list(manifest["files"]) == ["model.torchscript.pt"]

    def must_not_load(*_: Any, **__: Any) -> Any:
        raise AssertionError("a TorchScript file was loaded")

    monkeypatch.setattr(torch.jit, "load", must_not_load)
    with pytest.raises(MLQError, match="export for download"):
        load_predictor(registry, TENANT, "mlp", version)
    with pytest.raises(InvalidParams, match="methods that apply: none"):
        optimize(registry, messy_csv, "mlp", version, "quantize_dynamic")


def test_the_comparison_table_puts_parent_beside_child_with_the_change() -> None:
    side = {
        "artifact_bytes": 3000,
        "latency_ms": {"1": 2.0, "64": 4.0},
        "model_latency_ms": {"1": None, "64": None},
        "metrics": {"accuracy": 0.95, "confusion_matrix": [[1]]},
    }
    child = {**side, "artifact_bytes": 1000, "latency_ms": {"1": 1.0, "64": 8.0}, "metrics": {"accuracy": 0.94}}
    rows, header = comparison_rows({"parent": 1, "version": 2, "comparison": {"parent": side, "child": child}})
    assert header == ["", "PARENT v1", "CHILD v2", "CHANGE"]
    assert rows == [
        ["artifact bytes", "3000", "1000", "3.00x smaller"],
        ["latency 1 row (ms)", "2", "1", "2.00x faster"],
        ["latency 64 rows (ms)", "4", "8", "2.00x slower"],
        ["test accuracy", "0.95", "0.94", "-0.0100"],
    ]


def test_structured_pruning_zeroes_whole_hidden_neurons_and_leaves_the_output_layer_whole(
    registry: ModelRegistry, messy_csv: Path
) -> None:
    result = optimize(registry, messy_csv, "amount", 1, "prune", amount=0.5, structured=True, finetune_epochs=2)
    assert result["optimization"]["layers"] == [0.5, 0.0]
    net = load_predictor(registry, TENANT, "amount", result["version"]).model.net  # type: ignore[attr-defined]
    dead_rows = (net.layers[0].weight.abs().sum(dim=1) == 0).sum().item()
    assert dead_rows == 4  # of the 8 hidden neurons; a plain dense state dict, served like any MLP
