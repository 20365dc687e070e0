"""The stores a process works with, made from its settings: on MLQ_HOME alone (the default), or on the artifact
store MLQ_ARTIFACTS names with a local cache (store/artifacts.py). Stdlib and redis only: the API uses it."""

from __future__ import annotations

from collections.abc import Callable

import redis

from store.artifact_cache import ArtifactCache
from store.artifacts import ArtifactStore, open_store
from store.datasets import DatasetStore
from store.outputs import OutputStore
from store.settings import Settings
from training.registry import ModelRegistry

_stores: dict[tuple[str, str], ArtifactStore | None] = {}


def artifact_store(settings: Settings) -> ArtifactStore | None:
    """The process's store for MLQ_ARTIFACTS (one per URL: an S3 client is costly to make), or None."""
    key = (settings.artifacts, settings.s3_endpoint_url)
    if key not in _stores:
        _stores[key] = open_store(*key)
    return _stores[key]


def artifact_cache(settings: Settings) -> ArtifactCache:
    return ArtifactCache(settings.artifact_cache_dir, settings.cache_max_mb * 1024 * 1024)


def model_registry(settings: Settings, redis_client: Callable[[], redis.Redis]) -> ModelRegistry:
    store = artifact_store(settings)
    if store is None:
        return ModelRegistry(settings.models_dir, secret_key=settings.secret_key or None)
    from store.remote_registry import StoreRegistry

    return StoreRegistry(
        settings.models_dir, store, redis_client, artifact_cache(settings), secret_key=settings.secret_key or None
    )


def dataset_store(settings: Settings) -> DatasetStore:
    store = artifact_store(settings)
    if store is None:
        return DatasetStore(settings.datasets_dir)
    from store.remote_datasets import StoreDatasets

    return StoreDatasets(settings.datasets_dir, store, artifact_cache(settings), settings.secret_key)


def output_store(settings: Settings) -> OutputStore:
    return OutputStore(settings.outputs_dir, artifact_store(settings), artifact_cache(settings))
