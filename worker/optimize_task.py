"""The worker's task `mlqueue.optimize`: quantize, prune, distill or export a version, as a job on the train queue.

It runs under the same attempt lease as a training (store/leases.py): a heartbeat, the cancel check between
batches, one registration per job, and the sweeper re-sends it (by its `method`, see WorkerRuntime.send_train) if
its worker dies. There is no checkpoint to resume from: an optimisation is minutes at most, so a new attempt
starts over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery

from store.contract import OPTIMIZE_TASK, TRAIN_QUEUE, JobType, OptimizeRequest
from training.errors import ResourceNotFound
from training.optimize import optimize_version
from worker.attempt import Attempt, LeasedJob, register_leased
from worker.train_hooks import progress_reporter

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)


def _data_path(runtime: Runtime, request: OptimizeRequest) -> Any:
    """The parent's dataset file: the comparison and any fine-tuning need the parent's own splits."""
    manifest = runtime.registry.manifest(request.tenant, request.model, request.version)
    dataset_id = (manifest.get("dataset") or {}).get("id")
    if not dataset_id:
        raise ResourceNotFound(
            f"version {request.version} of {request.model!r} was trained from a local file, not an "
            "uploaded dataset; its test split cannot be rebuilt here. Upload the CSV and retrain, or "
            "optimise it with the library (training.optimize.optimize_version)"
        )
    return runtime.datasets.path(request.tenant, dataset_id)


class OptimizeJob(LeasedJob):
    """An optimize job as a leased job: no checkpoint (a new attempt starts over), one registration."""

    def __init__(self, runtime: Runtime, request: OptimizeRequest) -> None:
        self.runtime, self.request, self.job_id = runtime, request, request.job_id

    def run(self, attempt: Attempt) -> Mapping[str, Any]:
        request, runtime = self.request, self.runtime
        return optimize_version(
            registry=runtime.registry,
            tenant=request.tenant,
            name=request.model,
            version=request.version,
            method=request.method,
            params=request.params,
            data_path=_data_path(runtime, request),
            device=request.device,
            job_id=self.job_id,
            on_progress=progress_reporter(runtime.jobs, self.job_id),
            should_stop=attempt.should_stop,
            claim_registration=attempt.registration_claim(request.tenant, request.model),
        )

    def resend(self) -> None:
        self.runtime.send_train(self.request.encode())


def optimize_job(runtime: Runtime) -> Callable[[dict[str, Any], str], LeasedJob]:
    return lambda payload, _: OptimizeJob(runtime, OptimizeRequest.decode(payload))


def register_optimize(app: Celery, runtime: Runtime) -> None:
    """Register `mlqueue.optimize` on `app` (called by worker.tasks.register_tasks)."""
    register_leased(app, OPTIMIZE_TASK, runtime, optimize_job(runtime), fair=(TRAIN_QUEUE, JobType.OPTIMIZE.value))
