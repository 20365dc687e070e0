"""The model cache under a memory budget: real tiny torch versions in a real registry, measured, evicted least
recently used first, pinned by alias, refused with a named setting when they cannot fit, loaded once when many
callers want the same cold version at the same time."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from store.settings import Settings, SettingsError
from training.algorithms import FitHooks, build_model
from training.data import prepare, save_preprocessor
from training.params import validate_params
from training.predictor import Predictor
from training.predictors import load_predictor
from training.registry import ModelRegistry
from worker.footprint import module_bytes, object_bytes, predictor_bytes
from worker.model_cache import ModelCache, ModelTooLarge


def iris_frame() -> pd.DataFrame:
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame["species"] = iris.target_names[iris.target]
    return frame


def register_mlp(registry: ModelRegistry, staging: Path, name: str, hidden: list[int]) -> int:
    """Fit and register a tiny mlp version the way training.pipeline does; its version number."""
    data = prepare(iris_frame(), "species")
    params = validate_params("mlp", {"hidden_layers": hidden, "epochs": 1, "early_stopping_patience": 0}, data.task)
    x_train, x_val = data.preprocessor.transform(data.X_train), data.preprocessor.transform(data.X_val)
    model = build_model("mlp", data.task, params, x_train.shape[1], len(data.classes or []))
    model.fit(x_train, data.y_train, x_val, data.y_val, FitHooks(device="cpu"))
    staging.mkdir(parents=True)
    save_preprocessor(data.preprocessor, staging / "preprocessor.skops")
    model.save(staging)
    manifest = {
        "algorithm": "mlp",
        "task": data.task,
        "params": params,
        "metrics": {},
        "features": [{"name": f, "dtype": data.feature_dtypes[f]} for f in data.features],
        "classes": data.classes,
        "model_kind": model.kind,
        "preprocessor_file": "preprocessor.skops",
        "dataset": {"id": None, "sha256": data.dataset_sha256},
    }
    return int(registry.register("default", name, staging, manifest)["version"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """Three versions of `m` of the same size (hidden 128), and `big` (hidden 512, ~12x the weights)."""
    root = tmp_path_factory.mktemp("residency")
    registry = ModelRegistry(root / "models")
    for i in range(3):
        register_mlp(registry, root / f"s{i}", "m", [128])
    register_mlp(registry, root / "big", "big", [512, 512])
    return registry


@pytest.fixture(scope="module")
def size(registry: ModelRegistry) -> int:
    """The measured footprint of one version of `m` (all three are the same shape)."""
    cache = ModelCache(registry, device="cpu")
    cache.get("default", "m", 1)
    return cache.footprints()[("default", "m", 1)]


ROW = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}


def test_a_torch_versions_footprint_is_its_weights_plus_its_preprocessing(registry: ModelRegistry) -> None:
    predictor = load_predictor(registry, "default", "m", 1)
    net = predictor.model.net  # type: ignore[attr-defined]
    weights = sum(p.numel() * 4 for p in net.parameters())  # float32 parameters, no buffers in this MLP
    assert module_bytes(net) == weights
    total = predictor_bytes(predictor)
    assert weights < total < weights + 200_000  # the fitted scaler and encoder: arrays of a few features


def test_a_forest_is_estimated_by_walking_its_trees_arrays() -> None:
    X, y = load_iris(return_X_y=True)
    small = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    large = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)
    node_bytes = sum(t.tree_.__getstate__()["nodes"].nbytes for t in large.estimators_)
    # The Cython trees' node arrays are reached through their state: the estimate grows with the trees.
    assert object_bytes(large) > node_bytes
    assert object_bytes(large) > 5 * object_bytes(small)


def test_a_budget_for_two_versions_evicts_the_least_requested_then_least_recent(
    registry: ModelRegistry, size: int
) -> None:
    cache = ModelCache(registry, device="cpu", budget_bytes=int(2.5 * size))
    cache.get("default", "m", 1)
    cache.get("default", "m", 2)
    cache.get("default", "m", 1)  # v1 asked twice: v2 goes first
    predictor = cache.get("default", "m", 3)
    assert cache.loaded() == [("default", "m", 1), ("default", "m", 3)]
    assert cache.resident_bytes() <= cache.budget_bytes
    assert predictor.predict([ROW])[0]["label"] in {"setosa", "versicolor", "virginica"}
    cache.get("default", "m", 2)  # back again (asked twice now): v3, asked once, makes room; not v1
    assert cache.loaded() == [("default", "m", 1), ("default", "m", 2)]
    counts = cache.counters.take()
    assert counts["loads"] == 4 and counts["evictions"] == 2
    assert counts["hits"] == 1 and counts["misses"] == 4
    assert sum(v for k, v in counts.items() if k.startswith("load_s:")) == 4


def test_equally_requested_versions_go_least_recently_used_first(registry: ModelRegistry, size: int) -> None:
    cache = ModelCache(registry, device="cpu", budget_bytes=int(2.5 * size))
    for version in (1, 2, 3, 1):  # round robin: every version asked as often, so recency decides
        cache.get("default", "m", version)
    assert cache.loaded() == [("default", "m", 3), ("default", "m", 1)]


def test_a_version_behind_a_pinned_alias_is_never_evicted(registry: ModelRegistry, size: int) -> None:
    registry.set_alias("default", "m", "production", 1)
    cache = ModelCache(registry, device="cpu", budget_bytes=int(2.5 * size), pins=[(None, None, "production")])
    for version in (1, 2, 3, 2, 3):
        cache.get("default", "m", version)
    assert ("default", "m", 1) in cache.loaded()
    registry.set_alias("default", "m", "production", 3)  # the alias moved: v1 is an ordinary version now
    cache.get("default", "m", 2)
    assert sorted(cache.loaded()) == [("default", "m", 2), ("default", "m", 3)]
    registry.delete_alias("default", "m", "production")


def test_a_model_larger_than_the_budget_is_refused_naming_the_setting(registry: ModelRegistry, size: int) -> None:
    cache = ModelCache(registry, device="cpu", budget_bytes=int(2.5 * size))
    cache.get("default", "m", 1)
    with pytest.raises(ModelTooLarge, match="MLQ_MODEL_MEMORY_MB") as caught:
        cache.get("default", "big", 1)
    assert caught.value.code == "model_too_large"
    assert cache.loaded() == [("default", "m", 1)]  # nothing evicted for a model that can never fit
    assert cache.get("default", "m", 2).version == 2  # and the cache goes on serving
    assert cache.counters.take()["load_failures"] == 1


def test_pinned_versions_that_fill_the_budget_refuse_a_new_one(registry: ModelRegistry, size: int) -> None:
    cache = ModelCache(registry, device="cpu", budget_bytes=int(2.5 * size), pins=[("default", "m", "1")])
    cache.pins.append(("default", "m", "2"))  # the preload list's entries pin what they name
    cache.preload([("default", "m", "1"), ("default", "m", "2")])
    with pytest.raises(ModelTooLarge, match="pinned versions hold"):
        cache.get("default", "m", 3)
    assert cache.counters.take().get("misses", 0) == 1  # preloading is not a request


def test_concurrent_requests_for_a_cold_version_load_it_once(registry: ModelRegistry) -> None:
    calls: list[int] = []

    def slow_loader(reg: ModelRegistry, tenant: str, name: str, version: int, device: str) -> Predictor:
        calls.append(version)
        time.sleep(0.3)  # long enough that every thread asks while the first load runs
        return load_predictor(reg, tenant, name, version, device=device)

    cache = ModelCache(registry, device="cpu", loader=slow_loader)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("default", "m", 2))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert calls == [2]
    assert len(got) == 8 and all(p is got[0] for p in got)
    assert cache.counters.take()["loads"] == 1


def test_a_cold_load_does_not_stall_requests_for_loaded_versions(registry: ModelRegistry) -> None:
    release = threading.Event()

    def gated_loader(reg: ModelRegistry, tenant: str, name: str, version: int, device: str) -> Predictor:
        if version == 3:
            release.wait(timeout=60)
        return load_predictor(reg, tenant, name, version, device=device)

    cache = ModelCache(registry, device="cpu", loader=gated_loader)
    cache.get("default", "m", 1)
    loading = threading.Thread(target=lambda: cache.get("default", "m", 3))
    loading.start()
    try:
        assert cache.get("default", "m", 1).version == 1  # answered while v3's load is held
        assert loading.is_alive()
    finally:
        release.set()
        loading.join(timeout=60)
    assert cache.loaded() == [("default", "m", 1), ("default", "m", 3)]


def test_a_failed_load_is_reported_to_every_waiter_and_retried_later(registry: ModelRegistry) -> None:
    cache = ModelCache(registry, device="cpu")
    with pytest.raises(Exception, match="no-such-model|not found|does not exist"):
        cache.get("default", "no-such-model", 1)
    assert cache.loaded() == []


def test_the_settings_parse_and_refuse_bad_values() -> None:
    settings = Settings.from_env({"MLQ_MODEL_MEMORY_MB": "512", "MLQ_PIN_ALIASES": "production, staging"})
    assert settings.model_memory_mb == 512 and settings.pin_aliases == ("production", "staging")
    assert Settings.from_env({}).model_memory_mb == 0
    with pytest.raises(SettingsError, match="MLQ_MODEL_MEMORY_MB"):
        Settings.from_env({"MLQ_MODEL_MEMORY_MB": "-1"})
    with pytest.raises(SettingsError, match="MLQ_MODEL_MEMORY_MB"):
        Settings.from_env({"MLQ_MODEL_MEMORY_MB": "1GB"})
    with pytest.raises(SettingsError, match="MLQ_PIN_ALIASES"):
        Settings.from_env({"MLQ_PIN_ALIASES": "prod/uction"})


def test_predictions_of_a_reloaded_version_are_unchanged(registry: ModelRegistry, size: int) -> None:
    cache = ModelCache(registry, device="cpu", budget_bytes=int(1.5 * size))
    first = cache.get("default", "m", 1).scores([ROW])
    cache.get("default", "m", 2)  # evicts v1
    again = cache.get("default", "m", 1).scores([ROW])
    np.testing.assert_array_equal(first, again)
