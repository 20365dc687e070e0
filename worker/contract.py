"""What crosses the queue: task and queue names, job statuses, request messages, the one job error.

Torch-free and Celery-free: the API imports it to enqueue by name, the workers to decode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from training.params import ALGORITHM_NAMES  # noqa: F401  (re-exported: the names the contract accepts)

TRAIN_QUEUE = "train"
INFERENCE_QUEUE = "inference"
QUEUES = (TRAIN_QUEUE, INFERENCE_QUEUE)

TRAIN_TASK = "mlqueue.train"  # predictions are not Celery tasks: see worker/inference_queue.py
OPTIMIZE_TASK = "mlqueue.optimize"  # on the train queue: it fine-tunes, distills and measures like a training


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobType(StrEnum):
    TRAIN = "train"
    PREDICT = "predict"
    OPTIMIZE = "optimize"


class JobError(Exception):
    """Raised inside a task when a job fails for a reason the user should read; stored as the job's `error`."""

    def __init__(self, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors or []

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.code, "message": self.message}
        if self.errors:
            out["errors"] = self.errors
        return out


@dataclass(frozen=True)
class TrainRequest:
    """A training job as it travels to a `train` worker: ids and options, never the data itself."""

    job_id: str
    tenant: str
    model: str
    dataset_id: str
    target: str
    algorithm: str
    task: str | None = None
    features: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, data: dict[str, Any]) -> TrainRequest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class PredictRequest:
    """A prediction job: the model reference, the raw rows (bounded by MLQ_MAX_BATCH_ROWS) and post-processing."""

    job_id: str
    tenant: str
    model: str
    version: str | int | None
    inputs: list[Any]
    postprocess: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, data: dict[str, Any]) -> PredictRequest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class OptimizeRequest:
    """An optimize job: which version to optimise, the method and its (validated) params."""

    job_id: str
    tenant: str
    model: str
    version: int
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, data: dict[str, Any]) -> OptimizeRequest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
