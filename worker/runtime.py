"""What a task module needs from its worker process, as a Protocol: the tasks (train, batch, optimize, the
inference consumer) and the training hooks depend on this, not on worker/tasks.py, which wires them together, so
nothing below the wiring imports it (an import-linter contract in `make lint`).
"""

from __future__ import annotations

from typing import Any, Protocol

import redis
from celery import Celery

from store.artifacts import ArtifactStore
from store.datasets import DatasetStore
from store.fair import FairQueues
from store.jobs import JobStore
from store.leases import Leases
from store.settings import Settings
from training.registry import ModelRegistry
from worker.model_cache import ModelCache


class Runtime(Protocol):
    """One worker process's settings, clients and stores (worker/tasks.py's WorkerRuntime is the implementation)."""

    settings: Settings
    registry: ModelRegistry
    datasets: DatasetStore
    cache: ModelCache
    store: ArtifactStore | None  # MLQ_ARTIFACTS; None: everything on the local MLQ_HOME
    app: Celery | None

    @property
    def redis(self) -> redis.Redis: ...

    @property
    def jobs(self) -> JobStore: ...

    @property
    def leases(self) -> Leases: ...

    @property
    def fair(self) -> FairQueues: ...

    def run_fair(self, queue: str, job_type: str, payload: dict[str, Any], hostname: str) -> None:
        """A message of the train or batch queue arrived: run the job that is fairly next (store/fair.py)."""

    def send_train(self, payload: dict[str, Any]) -> None:
        """Put a training or an optimize job back on the `train` queue, by task name."""

    def error_for(self, job_id: str, exc: BaseException) -> dict[str, Any]:
        """The job error object for an exception a job ended with."""
