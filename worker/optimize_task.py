"""The worker's task `mlqueue.optimize`: quantize, prune, distill or export a version, as a job on the train queue.

It runs under the same attempt lease as a training (store/leases.py): a heartbeat, the cancel check between
batches, one registration per job, and the sweeper re-sends it (by its `method`, see WorkerRuntime.send_train) if
its worker dies. There is no checkpoint to resume from: an optimisation is minutes at most, so a new attempt
starts over.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery, Task

from store.contract import OPTIMIZE_TASK, TRAIN_QUEUE, JobType, OptimizeRequest
from store.script_outcomes import ClaimOutcome
from training.errors import Cancelled, RegistrationDeclined, ResourceNotFound
from training.optimize import optimize_version
from worker.train_hooks import (
    CancelCheck,
    JobHeartbeat,
    RegistrationClaim,
    progress_reporter,
    requeue_on_shutdown,
    retry_redis,
)

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


def run_optimize(runtime: Runtime, payload: dict[str, Any], hostname: str) -> None:
    request = OptimizeRequest.decode(payload)
    job_id = request.job_id
    token, why = retry_redis(lambda: runtime.leases.begin(job_id, hostname), f"job {job_id}: start", 30.0)
    if token is None:
        log.info("job %s not started: %s", job_id, why)
        return
    heartbeat = JobHeartbeat(runtime.leases, job_id, token, hostname, runtime.settings.heartbeat_s)
    check = CancelCheck(runtime.jobs, job_id, hostname=hostname, lost=heartbeat.lost)
    claim = RegistrationClaim(runtime, request, token)  # type: ignore[arg-type]  # uses job_id, tenant, model
    result: Mapping[str, Any] | None = None  # the optimisation's, or a training-shaped one rebuilt by the claim
    error: dict[str, Any] | None = None
    try:
        with heartbeat:
            result = optimize_version(
                registry=runtime.registry,
                tenant=request.tenant,
                name=request.model,
                version=request.version,
                method=request.method,
                params=request.params,
                data_path=_data_path(runtime, request),
                device=request.device,
                job_id=job_id,
                on_progress=progress_reporter(runtime.jobs, job_id),
                should_stop=check,
                claim_registration=claim,
            )
    except Cancelled:
        if check.reason == "drain":
            requeue_on_shutdown(
                runtime.leases, job_id, token, lambda: runtime.send_train(request.encode()), "it starts over"
            )
            return
        if check.reason == "lost":
            log.warning("job %s: attempt %d stopped; a newer attempt owns the job", job_id, token)
            return
        status = "cancelled"
    except RegistrationDeclined:
        if claim.existing is not None:
            status, result = "succeeded", claim.existing
        elif claim.outcome is ClaimOutcome.CANCELLED:
            status = "cancelled"
        else:
            log.warning("job %s: attempt %d lost the job before registering; nothing registered", job_id, token)
            return
    except Exception as exc:
        status, error = "failed", runtime.error_for(job_id, exc)
    else:
        status = "succeeded"
    runtime.conclude(job_id, token, hostname, status, result, error)


def register_optimize(app: Celery, runtime: Runtime) -> None:
    """Register `mlqueue.optimize` on `app` (called by worker.tasks.register_tasks)."""

    @app.task(name=OPTIMIZE_TASK, bind=True)  # type: ignore[untyped-decorator]  # celery has no type hints
    def optimize(self: Task, payload: dict[str, Any]) -> None:
        runtime.run_fair(TRAIN_QUEUE, JobType.OPTIMIZE.value, payload, self.request.hostname or "unknown")
