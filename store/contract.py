"""What crosses the queue: task and queue names, job statuses, request messages, the one job error.

Torch-free and Celery-free: the API imports it to enqueue by name, the workers to decode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Re-exported: the statuses and types, defined with their transitions in store/job_states.py.
from store.job_states import FINAL_STATUSES as FINAL_STATUSES
from store.job_states import JobStatus as JobStatus
from store.job_states import JobType as JobType
from training.params import ALGORITHM_NAMES  # noqa: F401  (re-exported: the names the contract accepts)

TRAIN_QUEUE = "train"
INFERENCE_QUEUE = "inference"
QUEUES = (TRAIN_QUEUE, INFERENCE_QUEUE)
# Offline scoring of whole datasets runs on workers of its own (docs/operations.md says why). /readyz does not
# require one: online serving is ready without them. WORKER_QUEUES is every queue a worker may consume.
BATCH_QUEUE = "batch"
WORKER_QUEUES = (*QUEUES, BATCH_QUEUE)

TRAIN_TASK = "mlqueue.train"  # predictions are not Celery tasks: see store/inference_queue.py
BATCH_PREDICT_TASK = "mlqueue.batch_predict"
SEARCH_TASK = "mlqueue.search"  # a search's own message: it fans its trials out as train jobs (store/searches.py)
OPTIMIZE_TASK = "mlqueue.optimize"  # on the train queue: it fine-tunes, distills and measures like a training
ROLLOUT_TASK = "mlqueue.rollout"  # on the train queue: a leased job that moves an alias step by step
PRIORITIES = ("high", "normal")  # a prediction's lane (store/inference_queue.py)


# The jobs that hold an attempt lease (store/leases.py), and the task and queue a requeued one is sent to.
LEASED_TASKS = {
    JobType.TRAIN.value: (TRAIN_TASK, TRAIN_QUEUE),
    JobType.BATCH_PREDICT.value: (BATCH_PREDICT_TASK, BATCH_QUEUE),
    JobType.OPTIMIZE.value: (OPTIMIZE_TASK, TRAIN_QUEUE),
    JobType.ROLLOUT.value: (ROLLOUT_TASK, TRAIN_QUEUE),
}


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
    warm_start: dict[str, Any] | None = None  # {"model", "version"}: an mlp continues from that version's weights
    parent: str | None = None  # a search's job id: this training is one of its trials and registers nothing
    trial: int | None = None  # the trial's number in its search

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
    shadow: int | None = None  # a version that runs a copy of the request after it is answered (store/traffic.py)
    alias: str | None = None  # the alias the client named, whose serving policy applies (store/serving.py)
    deadline_ms: int | None = None  # epoch ms after which the request is never computed (it ends `expired`)
    priority: str = "normal"  # "high" | "normal": the stream (lane) it was queued on
    counted: bool = False  # whether it is in the model's queued set (its `max_queued` cap)

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, data: dict[str, Any]) -> PredictRequest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class BatchPredictRequest:
    """A batch prediction: a dataset id and a model version resolved by the API (a resumed attempt scores with the
    same version, whatever an alias says by then), the passthrough columns and the output format."""

    job_id: str
    tenant: str
    model: str
    version: int
    dataset_id: str
    postprocess: dict[str, Any] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    format: str = "csv"

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, data: dict[str, Any]) -> BatchPredictRequest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class SearchRequest:
    """A hyperparameter search: the training it varies, how trials are ranked, and every trial, planned up front.

    `trials` is [{"id": job id, "algorithm", "params"}]: the API validated each one before anything was queued.
    """

    job_id: str
    tenant: str
    model: str
    dataset_id: str
    target: str
    trials: list[dict[str, Any]]
    task: str | None = None
    features: list[str] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    metric: str | None = None  # None: f1 for classification, rmse for regression
    direction: str | None = None  # "maximize" | "minimize"; None: the metric's own
    rank_by: str | None = None  # "cv" (the CV mean) | "test"; None: cv when split.cv is set

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, data: dict[str, Any]) -> SearchRequest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def trial_request(self, index: int) -> TrainRequest:
        trial = self.trials[index]
        return TrainRequest(
            job_id=trial["id"],
            tenant=self.tenant,
            model=self.model,
            dataset_id=self.dataset_id,
            target=self.target,
            algorithm=trial["algorithm"],
            task=self.task,
            features=self.features,
            params=trial["params"],
            preprocessing=self.preprocessing,
            split=self.split,
            device=self.device,
            parent=self.job_id,
            trial=index,
        )


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
