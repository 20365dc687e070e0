"""The typed shapes of a model version's manifest and of a training's result. Stdlib only (the API imports it).

They describe the JSON that training/registry.py writes and reads (`manifest.json`), and the result that
training/pipeline.py returns and the worker records on the job: types for the checker, plain dicts at run time,
so nothing about the stored or served JSON changes.
"""

from __future__ import annotations

from typing import Any, NotRequired, Required, TypedDict


class FileEntry(TypedDict):
    """One file of a version: `manifest["files"][relative path]`."""

    sha256: str
    size_bytes: int


class ArtifactInfo(TypedDict):
    """`manifest["artifact"]`: the version's files as a whole."""

    format: str
    size_bytes: int
    sha256: str  # over the sorted `sha256sum` lines of the files


class FeatureSpec(TypedDict):
    """One input column, in order: `manifest["features"][i]`."""

    name: str
    dtype: str  # "number" | "category"


class ModelManifest(TypedDict, total=False):
    """A registered version's `manifest.json`.

    The registry accepts any JSON object and adds the required keys below; the others are what training
    (training/pipeline.py), a search (store/searches.py) and an optimisation (training/optimize.py) record.
    """

    # Written by ModelRegistry.register on every version.
    version: Required[int]
    created_at: Required[str]  # RFC 3339 UTC, milliseconds
    files: Required[dict[str, FileEntry]]
    artifact: Required[ArtifactInfo]
    hmac: str  # only with a registry secret key
    # Written by training.
    name: str
    algorithm: str
    task: str  # "classification" | "regression"
    task_inferred: bool
    target: str
    params: dict[str, Any]
    preprocessing: dict[str, Any]
    split: dict[str, Any]
    metrics: dict[str, Any]
    epochs_run: int
    features: list[FeatureSpec]
    feature_dtypes: dict[str, str]  # an older shape: `features` as bare names, the dtypes here
    classes: list[Any] | None
    model_kind: str
    preprocessor_file: str
    dataset: dict[str, Any]  # {"id", "sha256", "rows_used", "rows"}
    job_id: str | None
    library_versions: dict[str, str]
    warnings: list[str]
    feature_importance: Any
    cv: dict[str, Any]
    warm_start: dict[str, Any]  # {"model", "version", "job_id"}
    # Written by a search (its best trial) and by an optimisation (the child version).
    search: dict[str, Any]
    parent: int
    optimization: dict[str, Any]
    comparison: dict[str, Any]
    export: dict[str, Any]
    kind: str  # "export" for an export (a file to download, never served); absent for a servable version
    # Written by training, copied by an optimisation: see training/drift_reference.py. Absent in older versions.
    drift_reference: dict[str, Any]
    # Written by an upload (api/model_upload.py): the graph's inputs, outputs, layout; where the model came from.
    onnx: dict[str, Any]
    source: dict[str, Any]


def is_export(manifest: ModelManifest) -> bool:
    """An export (ONNX, TorchScript) is a file to download: no worker loads it, so it is never served or `latest`.
    Exports registered before `kind` was written have their `export` details."""
    return manifest.get("kind") == "export" or "export" in manifest


def export_format(manifest: ModelManifest) -> str:
    return str((manifest.get("export") or {}).get("format") or manifest.get("model_kind") or "file")


class ModelVersions(TypedDict):
    """A model with its aliases and every version's manifest, oldest first (ModelRegistry.get_model)."""

    name: str
    latest_version: int
    aliases: dict[str, int]
    versions: list[ModelManifest]


class TrainResult(TypedDict):
    """A training's result (`job["result"]` of a train job), as training.pipeline.train_model returns it.

    A search's trial saves its model without registering it: `version` None.
    """

    model: str
    version: int | None
    metrics: dict[str, Any]
    epochs_run: int
    duration_s: float
    task: str
    task_inferred: bool
    warnings: list[str]
    cv: NotRequired[dict[str, Any]]


class RecoveredResult(TypedDict):
    """The result of a job whose version an earlier attempt registered before it died, rebuilt from the manifest
    (worker/train_hooks.py): what the manifest recorded, no duration."""

    model: str
    version: int
    metrics: dict[str, Any] | None
    epochs_run: int | None
    duration_s: None
    task: str | None
    task_inferred: bool | None
    recovered: bool
