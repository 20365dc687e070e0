"""Request and response models of the REST contract (docs/api.md). Pydantic v2 only, no Flask: the OpenAPI
document is generated from these, and clients may reuse them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from training.params import ALGORITHM_NAMES

MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
JobTypeName = Literal["train", "predict", "batch_predict", "optimize", "search", "rollout"]


def _whole_number(value: Any) -> Any:
    # JSON (and JSON Schema) has one number type: 3.0 is the integer 3. Strict mode still refuses "3" and 3.5.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_whole_number)]


class Body(BaseModel):
    # Strict JSON: unknown fields are refused (no mass assignment) and "true"/"1" are not booleans or numbers.
    model_config = ConfigDict(extra="forbid", strict=True)


# ---- problems -------------------------------------------------------------------------------------------
class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str | None = None
    errors: list[ErrorItem] | None = None


# ---- shared query, header and path parts -----------------------------------------------------------------
_SCHEMAS: dict[type, dict[str, Any]] = {}


class Parameters(BaseModel):
    """Base of the query and header models. flask-openapi3 calls `model_json_schema()` on them on EVERY request (to
    see which fields are lists); py-spy showed that schema generation as ~14 % of a GET's CPU, and ~40 % of a
    predict request's before it validated itself. The argument-free schema is built once per class; the OpenAPI
    document's own calls (with arguments) are not cached."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)
        schema = _SCHEMAS.get(cls)
        if schema is None:
            schema = _SCHEMAS[cls] = super().model_json_schema()
        return dict(schema)


class ListQuery(Parameters):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=512, description="next_cursor of the previous page")


class WaitQuery(Parameters):
    wait: int | None = Field(None, ge=0, description="seconds to wait for the job to end (at most 30)")


class JobHeaders(Parameters):
    idempotency_key: str | None = Field(
        None, alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"
    )
    prefer: str | None = Field(None, alias="Prefer", max_length=1024, description="RFC 7240, e.g. wait=10")


# ---- datasets --------------------------------------------------------------------------------------------
class UploadQuery(Parameters):
    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")


class DatasetPath(BaseModel):
    dataset_id: str = Field(max_length=64)


class Column(BaseModel):
    name: str
    dtype: Literal["number", "string"]
    missing: int
    distinct: int | None = None  # absent for datasets uploaded before it was counted


class Dataset(BaseModel):
    id: str
    name: str
    rows: int
    columns: list[Column]
    sha256: str
    size_bytes: int
    created_at: str


class DatasetList(BaseModel):
    items: list[Dataset]
    next_cursor: str | None


# ---- jobs ------------------------------------------------------------------------------------------------
class JobPath(BaseModel):
    job_id: str = Field(max_length=64)


class JobsQuery(ListQuery):
    status: JobStatusName | None = None
    type: JobTypeName | None = None
    model: str | None = Field(None, max_length=63)


class JobLinks(BaseModel):
    self: str
    events: str
    cancel: str


class Progress(BaseModel):
    model_config = ConfigDict(extra="allow")
    fraction: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    message: str | None = None


class JobErrorOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    message: str


class Job(BaseModel):
    id: str
    type: JobTypeName
    status: JobStatusName
    model: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    worker: str | None = Field(None, description="the worker of the latest attempt; null before one started")
    progress: Progress | None
    result: dict[str, Any] | None
    error: JobErrorOut | None
    links: JobLinks


class JobList(BaseModel):
    items: list[Job]
    next_cursor: str | None


# ---- training --------------------------------------------------------------------------------------------
class Preprocessing(Body):
    missing: Literal["drop", "impute"] = "impute"
    deduplicate: bool = False
    scale: bool = True


class Split(Body):
    test: float = Field(default=0.2, gt=0, lt=1)
    validation: float = Field(default=0.1, ge=0, lt=1)
    seed: JsonInt = Field(default=0, ge=0, le=2**32 - 1)
    stratify: bool = True
    cv: JsonInt | None = Field(default=None, ge=2, le=20, description="k-fold cross-validation on the training rows")

    @model_validator(mode="after")
    def leaves_training_rows(self) -> Split:
        if self.test + self.validation >= 1:
            raise ValueError("test + validation must be below 1, so that rows are left to train on")
        return self


class WarmStart(Body):
    model: str = Field(pattern=MODEL_NAME)
    version: JsonInt | str | None = Field(None, description="version number or alias; default production, else latest")


class TrainBody(Body):
    model: str = Field(pattern=MODEL_NAME, description="model name; a new version is registered under it")
    dataset: str = Field(min_length=1, max_length=64, description="dataset id from POST /v1/datasets")
    target: str = Field(min_length=1, max_length=1000)
    algorithm: str = Field(json_schema_extra={"enum": list(ALGORITHM_NAMES)})
    task: Literal["classification", "regression"] | None = None
    features: list[str] | None = Field(None, min_length=1, max_length=10_000)
    params: dict[str, Any] = Field(default_factory=dict)
    preprocessing: Preprocessing = Field(default_factory=lambda: Preprocessing())
    split: Split = Field(default_factory=lambda: Split())
    device: Literal["auto", "cpu", "cuda"] = "auto"
    warm_start: WarmStart | None = Field(None, description="mlp only: continue from a registered version")


class SearchBody(Body):
    """POST /v1/jobs/search: the train body, with a search space instead of fixed params (docs/api.md)."""

    model: str = Field(pattern=MODEL_NAME, description="the best trial is registered as a version of it")
    dataset: str = Field(min_length=1, max_length=64)
    target: str = Field(min_length=1, max_length=1000)
    algorithm: str | None = Field(None, json_schema_extra={"enum": list(ALGORITHM_NAMES)})
    algorithms: dict[str, dict[str, Any]] | None = Field(None, description="several algorithms: {name: space}")
    task: Literal["classification", "regression"] | None = None
    features: list[str] | None = Field(None, min_length=1, max_length=10_000)
    params: dict[str, Any] = Field(default_factory=dict, description="fixed params of every trial")
    search: dict[str, Any] = Field(
        default_factory=dict,
        description='a grid {"lr": [0.1, 0.01]} or {"strategy": '
        '"random", "trials": 20, "seed": 0, "space": {"lr": {"log_uniform": [1e-4, 0.1]}}}',
    )
    metric: str | None = Field(None, description="default: f1 (classification), rmse (regression)")
    direction: Literal["maximize", "minimize"] | None = None
    rank_by: Literal["cv", "test"] | None = Field(None, description="default: cv when split.cv is set, else test")
    preprocessing: Preprocessing = Field(default_factory=lambda: Preprocessing())
    split: Split = Field(default_factory=lambda: Split())
    device: Literal["auto", "cpu", "cuda"] = "auto"


# ---- models and inference --------------------------------------------------------------------------------
class ModelPath(BaseModel):
    name: str = Field(max_length=63)


class VersionPath(ModelPath):
    version: int


class AliasPath(ModelPath):
    alias: str = Field(max_length=63, pattern=MODEL_NAME)


class AliasBody(Body):
    version: JsonInt | None = Field(None, ge=1, le=2**31 - 1, description="one version takes all traffic")
    versions: dict[str, Any] | None = Field(None, description='shares in percent, e.g. {"3": 90, "4": 10}')
    shadow: dict[str, Any] | None = Field(None, description='a copy of requests: {"version": 5, "percent": 20}')


class ModelSummary(BaseModel):
    name: str
    latest_version: int | None
    aliases: dict[str, int]
    traffic: dict[str, Any] | None = None  # per alias with a split or shadow: {"versions", "shadow"}


class ModelList(BaseModel):
    items: list[ModelSummary]
    next_cursor: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: int
    created_at: str
    artifact: dict[str, Any]


class Model(ModelSummary):
    versions: list[Manifest]


class Postprocess(Body):
    output: Literal["label", "proba", "both"] | None = None
    top_k: JsonInt | None = Field(None, ge=1, le=10_000)
    threshold: float | None = Field(None, ge=0, le=1)
    sort: Literal["desc", "asc", "none"] | None = None


class PredictBody(Body):
    version: str | int | None = Field(None, description="alias or version number; default production, else latest")
    inputs: list[dict[str, Any] | list[Any]] = Field(min_length=1, description="raw rows, up to MLQ_MAX_BATCH_ROWS")
    postprocess: Postprocess | None = None
    routing_key: str | None = Field(
        None, max_length=256, description="the same key always lands on the same version of a split alias"
    )
    priority: Literal["high", "normal"] | None = Field(
        None, description="the inference lane: high requests are served first (normal ones wait a bounded time)"
    )


class BatchPostprocess(Body):
    output: Literal["label", "proba", "both"] | None = Field(
        None, description="classification: the label, one probability column per class, or both (default)"
    )


class BatchPredictBody(Body):
    version: str | int | None = Field(None, description="alias or version number; default production, else latest")
    dataset: str = Field(min_length=1, max_length=64, description="dataset id from POST /v1/datasets")
    postprocess: BatchPostprocess | None = None
    columns: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="dataset columns copied into the output first, e.g. an id to join on",
    )
    format: Literal["csv", "parquet"] = "csv"


class OptimizeBody(BaseModel):
    # The method's own parameters sit beside `method` (see docs/api.md); training/optimize_params.py checks them
    # against the parent version, so unknown keys are refused there, naming the method's parameters.
    model_config = ConfigDict(extra="allow", strict=True)
    method: str = Field(
        json_schema_extra={"enum": ["quantize_dynamic", "prune", "distill", "export"]},
        description="quantize_dynamic | prune | distill | export; the method's params beside it",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"


# ---- service ---------------------------------------------------------------------------------------------
class Health(BaseModel):
    status: str


class QueueState(BaseModel):
    workers: int
    depth: int | None


class Readiness(BaseModel):
    redis: str
    queues: dict[str, QueueState]
