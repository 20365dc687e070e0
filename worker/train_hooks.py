"""The callbacks a training calls back into the worker with, and the lease heartbeat thread that feeds them.

`train_model` (training/pipeline.py) knows nothing of Redis: it asks `should_stop` between batches (`CancelCheck`:
the cancel flag, a drain deadline, a lost lease), reports through `on_progress` (`progress_reporter`) and asks
`claim_registration` (`RegistrationClaim`) right before it registers a version. These hooks are per job and hold
no process state, so they live apart from the process start-up and task wiring of worker/tasks.py, which builds
them for every attempt. `retry_redis` is here because the registration claim needs it, as does the attempt's own
start and final write in worker/tasks.py.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from store import keys
from store.jobs import JobStore
from store.leases import Leases, drain_key, parse_drain
from store.script_outcomes import ClaimOutcome, PreemptOutcome
from training.errors import ResourceNotFound
from training.manifest import RecoveredResult
from training.registry import ModelRegistry

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)

# Cancellation is checked at most this often: a tiny batch takes microseconds, a Redis GET ~0.1 ms.
CANCEL_CHECK_INTERVAL_S = 0.05
# How long the end of a training keeps retrying its last Redis writes (claim, final status) through an outage.
FINAL_WRITE_RETRY_S = 120.0
T = TypeVar("T")


def retry_redis(call: Callable[[], T], what: str, within_s: float = FINAL_WRITE_RETRY_S) -> T:
    """`call()`, retried through RedisErrors for up to `within_s` (then the last error is raised)."""
    deadline = time.monotonic() + within_s
    delay = 0.2
    while True:
        try:
            return call()
        except redis.RedisError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def requeue_on_shutdown(leases: Leases, job_id: str, token: int, resend: Callable[[], object], kept: str) -> None:
    """The worker is shutting down and its grace period is over: put the job back on its queue for another attempt.

    PREEMPT moves the job back to queued only while this attempt holds it (not when its cancel was requested: then it
    ends cancelled); then `resend()` sends its message again. When either fails, UNREQUEUE makes the job look running
    with a dead holder again, so a sweeper on another worker requeues it once the lease expires: a job is never left
    queued with no message. `kept` says what the next attempt starts from, for the log.
    """
    try:
        outcome = retry_redis(lambda: leases.preempt(job_id, token), f"job {job_id}: requeue", 10.0)
        if outcome is PreemptOutcome.REQUEUED:
            retry_redis(resend, f"job {job_id}: re-send", 10.0)
            log.warning("job %s: worker shutting down; requeued after attempt %d (%s)", job_id, token, kept)
    except Exception:
        log.exception("job %s: could not requeue it on shutdown; a sweeper will", job_id)
        with contextlib.suppress(Exception):
            leases.unrequeue(job_id, token)


class CancelCheck:
    """`should_stop` for the training loop: asks Redis at most every `interval_s`, remembers a yes.

    It stops for one of three reasons, kept in `reason`: "cancel" (the job's cancel flag), "drain" (this worker
    is shutting down and its grace period is over: the job goes back on the queue) or "lost" (the attempt's lease
    is gone: another attempt owns the job now).
    """

    def __init__(
        self,
        jobs: JobStore,
        job_id: str,
        interval_s: float = CANCEL_CHECK_INTERVAL_S,
        hostname: str = "",
        lost: threading.Event | None = None,
    ) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.interval_s = interval_s
        self.hostname = hostname
        self.lost = lost
        self.reason: str | None = None
        self._last = float("-inf")

    def __call__(self) -> bool:
        if self.reason is not None:
            return True
        if self.lost is not None and self.lost.is_set():
            self.reason = "lost"
            return True
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            try:
                cancel, drain = self.jobs.redis.mget(keys.job_cancel(self.job_id), drain_key(self.hostname))
            except redis.RedisError as exc:
                # A Redis blip must not kill hours of training; the next due check asks again.
                log.warning("job %s: cancel check failed: %s", self.job_id, exc)
            else:
                deadline = parse_drain(drain)
                if cancel:
                    self.reason = "cancel"
                elif deadline is not None and time.time() >= deadline:
                    self.reason = "drain"
        return self.reason is not None


def progress_reporter(jobs: JobStore, job_id: str) -> Callable[..., None]:
    """`on_progress` for the training loop: writes the contract's progress object to the job record."""

    def on_progress(
        epoch: int | None = None,
        epochs: int | None = None,
        loss: float | None = None,
        val_loss: float | None = None,
        **extra: Any,
    ) -> None:
        fraction = extra.get("fraction")
        if fraction is None and epoch and epochs:
            fraction = epoch / epochs
        message = extra.get("message") or (f"epoch {epoch}/{epochs}" if epoch and epochs else None)
        progress = {
            "fraction": None if fraction is None else round(float(fraction), 4),
            "epoch": epoch,
            "epochs": epochs,
            "loss": loss,
            "val_loss": val_loss,
            "message": message,
        }
        try:
            jobs.set_progress(job_id, progress)
        except redis.RedisError as exc:
            log.warning("job %s: progress not recorded: %s", job_id, exc)

    return on_progress


class JobHeartbeat:
    """While a training runs, refresh its attempt's lease, so a dead worker is told from a slow one.

    When the lease is gone (the job was requeued after this worker looked dead, or it ended), `lost` is set and
    the training stops at its next batch: another attempt owns the job.
    """

    def __init__(self, leases: Leases, job_id: str, token: int, worker: str, interval_s: float) -> None:
        self.leases, self.job_id, self.token, self.worker = leases, job_id, token, worker
        self.interval_s = max(0.05, interval_s)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mlq-job-{job_id}", daemon=True)

    def _beat(self) -> None:
        try:
            if not self.leases.heartbeat(self.job_id, self.token, self.worker):
                if not self.lost.is_set():
                    log.warning("job %s: attempt %d no longer holds the job; stopping it", self.job_id, self.token)
                self.lost.set()
        except redis.RedisError as exc:
            log.warning("job %s: heartbeat failed: %s", self.job_id, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()

    def __enter__(self) -> JobHeartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1)


def registered_by(registry: ModelRegistry, tenant: str, model: str, job_id: str) -> RecoveredResult | None:
    """The job's result, rebuilt from the registry, if a version of `model` was registered by `job_id`."""
    try:
        versions = registry.get_model(tenant, model)["versions"]
    except ResourceNotFound:
        return None
    for manifest in reversed(versions):
        if manifest.get("job_id") == job_id:
            return {
                "model": model,
                "version": manifest["version"],
                "metrics": manifest.get("metrics"),
                "epochs_run": manifest.get("epochs_run"),
                "duration_s": None,
                "task": manifest.get("task"),
                "task_inferred": manifest.get("task_inferred"),
                "recovered": True,
            }
    return None


class RegistrationClaim:
    """`claim_registration` for train_model: one job registers at most one version, whatever happens.

    Claims `mlq:job:{id}:registered` for this attempt (only while it holds the job, and not once a cancel was
    requested). If an earlier attempt holds the claim, its version is looked up in the registry: found, this
    attempt finishes with it (`existing`); not found (that attempt died between the claim and the rename), the
    claim is taken over.
    """

    def __init__(self, runtime: Runtime, job_id: str, tenant: str, model: str, token: int) -> None:
        self.runtime, self.job_id, self.tenant, self.model, self.token = runtime, job_id, tenant, model, token
        self.existing: RecoveredResult | None = None
        self.outcome: ClaimOutcome | None = None

    def __call__(self) -> bool:
        leases, job_id = self.runtime.leases, self.job_id
        code, holder = retry_redis(lambda: leases.claim_registration(job_id, self.token), f"job {job_id}: claim")
        if code is ClaimOutcome.HELD:
            self.existing = registered_by(self.runtime.registry, self.tenant, self.model, job_id)
            if self.existing is not None:
                log.warning(
                    "job %s: attempt %s already registered version %s; not registering another",
                    job_id,
                    holder,
                    self.existing["version"],
                )
                return False
            code, holder = retry_redis(
                lambda: leases.claim_registration(job_id, self.token, takeover_from=holder), f"job {job_id}: claim"
            )
        self.outcome = code
        return code is ClaimOutcome.CLAIMED
