"""The worker's tasks, `mlqueue.train` and `mlqueue.predict`, and the per-process start-up that serves them.

The only module of `worker/` that imports `training/`. Tasks are registered on an app by `register_tasks(app,
settings)`, called once by `worker/app.py` (the process edge that reads the settings): closures over one
`WorkerRuntime` instead of module-level settings, so importing this module reads no environment and connects
nothing. Per-process resources (Redis, the model cache's contents, the liveness heartbeat) are created in
`worker_process_init`, i.e. after the fork in each prefork child (with -P solo: in the main process), so the
parent that forks never holds a connection, a model or a CUDA context.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import torch
from celery import Celery, Task, signals
from celery.exceptions import SoftTimeLimitExceeded

from training.errors import Cancelled, MLQError
from training.pipeline import train_model
from training.registry import ModelRegistry
from worker.contract import PREDICT_TASK, TRAIN_TASK, JobError, PredictRequest, TrainRequest
from worker.datasets import DatasetStore
from worker.jobs import JobStore
from worker.liveness import Heartbeat, WorkerLiveness
from worker.model_cache import ModelCache
from worker.settings import Settings

log = logging.getLogger(__name__)

# Cancellation is checked at most this often: a tiny batch takes microseconds, a Redis GET ~0.1 ms.
CANCEL_CHECK_INTERVAL_S = 0.05


def _device_label() -> str:
    """What this process computes on, for the liveness record (the launcher pins CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return "auto"
    return "cpu" if visible.strip() in ("", "-1") else f"cuda:{visible}"


class CancelCheck:
    """`should_stop` for the training loop: asks Redis at most every `interval_s`, remembers a yes."""

    def __init__(self, jobs: JobStore, job_id: str, interval_s: float = CANCEL_CHECK_INTERVAL_S) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.interval_s = interval_s
        self._last = float("-inf")
        self._cancelled = False

    def __call__(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            try:
                self._cancelled = self.jobs.cancel_requested(self.job_id)
            except redis.RedisError as exc:
                # A Redis blip must not kill hours of training; the next due check asks again.
                log.warning("job %s: cancel check failed: %s", self.job_id, exc)
        return self._cancelled


def progress_reporter(jobs: JobStore, job_id: str) -> Callable[..., None]:
    """`on_progress` for the training loop: writes the contract's progress object to the job record."""

    def on_progress(epoch: int | None = None, epochs: int | None = None, loss: float | None = None,
                    val_loss: float | None = None, **extra: Any) -> None:
        fraction = extra.get("fraction")
        if fraction is None and epoch and epochs:
            fraction = epoch / epochs
        message = extra.get("message") or (f"epoch {epoch}/{epochs}" if epoch and epochs else None)
        progress = {"fraction": None if fraction is None else round(float(fraction), 4), "epoch": epoch,
                    "epochs": epochs, "loss": loss, "val_loss": val_loss, "message": message}
        try:
            jobs.set_progress(job_id, progress)
        except redis.RedisError as exc:
            log.warning("job %s: progress not recorded: %s", job_id, exc)

    return on_progress


class JobHeartbeat:
    """While a training runs, refresh its job heartbeat key, so a dead worker is told from a slow one."""

    def __init__(self, jobs: JobStore, job_id: str, worker: str, interval_s: float) -> None:
        self.jobs, self.job_id, self.worker = jobs, job_id, worker
        self.interval_s = max(0.05, interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mlq-job-{job_id}", daemon=True)

    def _beat(self) -> None:
        try:
            self.jobs.heartbeat(self.job_id, self.worker, self.interval_s * 3)
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


class WorkerRuntime:
    """What one worker process holds: settings, its Redis client, stores, model cache and heartbeat."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings.models_dir, secret_key=settings.secret_key)
        self.datasets = DatasetStore(settings.datasets_dir)
        self.cache = ModelCache(self.registry)
        self._redis: redis.Redis | None = None
        self._jobs: JobStore | None = None
        self._heartbeat: Heartbeat | None = None

    @property
    def redis(self) -> redis.Redis:
        # Opened lazily: a client created before a fork would be shared by parent and child.
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        return self._redis

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore(self.redis, ttl_s=self.settings.job_ttl_s)
        return self._jobs

    def start(self, hostname: str, queues: list[str]) -> None:
        """Runs once per worker process, after the fork: threads, preloaded models, then the heartbeat."""
        torch.set_num_threads(self.settings.torch_threads)
        started = time.monotonic()
        loaded = self.cache.preload(self.settings.preload)
        log.info("%s (pid %d) ready on %s: preloaded %s in %.1f s", hostname, os.getpid(), ",".join(queues),
                 loaded or "no models", time.monotonic() - started)
        # Only now is the process counted as a worker: its models are in memory.
        self._heartbeat = Heartbeat(WorkerLiveness(self.redis), hostname, queues, self.settings.heartbeat_s,
                                    _device_label(), models=self.cache.describe)
        self._heartbeat.start()

    def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def begin(self, job_id: str, hostname: str) -> bool:
        """Claim a job; False when it must not run (cancelled while queued, already final, too many attempts)."""
        if not self.jobs.mark_running(job_id, hostname):
            log.info("job %s is cancelled or already final; skipped", job_id)
            return False
        job = self.jobs.get(job_id) or {}
        attempts = int(job.get("attempts") or 0)
        if attempts > self.settings.max_attempts:
            # The message came back after its worker died this many times: the job likely kills workers.
            self.jobs.finish(job_id, "failed", error={
                "type": "too_many_attempts",
                "message": f"the job was started {attempts} times and its worker died each time "
                           f"(limit MLQ_MAX_ATTEMPTS={self.settings.max_attempts}); it may need more memory "
                           "or smaller parameters"})
            return False
        return True

    def error_for(self, job_id: str, exc: BaseException) -> dict[str, Any]:
        """The job error for `exc`: the library's own errors as they are, anything else as internal."""
        if isinstance(exc, MLQError | JobError):
            error = exc.to_dict()
        elif isinstance(exc, SoftTimeLimitExceeded):
            error = {"type": "time_limit", "message": f"the job ran past its time limit "
                     f"(MLQ_JOB_TIME_LIMIT_S={self.settings.job_time_limit_s}) and was stopped"}
        else:
            log.exception("job %s failed with an unexpected error", job_id, exc_info=exc)
            error = {"type": "internal_error", "message": f"the worker failed unexpectedly: "
                     f"{type(exc).__name__}: {exc}"}
        return error

    def train(self, payload: dict[str, Any], hostname: str) -> None:
        request = TrainRequest.decode(payload)
        job_id = request.job_id
        if not self.begin(job_id, hostname):
            return
        checkpoint_dir = self.settings.checkpoints_dir / job_id
        try:
            with JobHeartbeat(self.jobs, job_id, hostname, self.settings.heartbeat_s):
                result = train_model(
                    data_path=self.datasets.path(request.tenant, request.dataset_id),
                    target=request.target, algorithm=request.algorithm, model_name=request.model,
                    registry=self.registry, tenant=request.tenant, task=request.task, features=request.features,
                    params=request.params, preprocessing=request.preprocessing, split=request.split,
                    device=request.device, checkpoint_dir=checkpoint_dir,
                    on_progress=progress_reporter(self.jobs, job_id), should_stop=CancelCheck(self.jobs, job_id),
                    dataset_id=request.dataset_id, job_id=job_id,
                )
        except Cancelled:
            log.info("job %s cancelled; nothing registered", job_id)
            status, result, error = "cancelled", None, None
        except Exception as exc:
            status, result, error = "failed", None, self.error_for(job_id, exc)
        else:
            status, error = "succeeded", None
        # The job ends here (not in a dead process), so no later attempt will resume from the checkpoint.
        # Removed before the final status is written: whoever sees the job final sees it cleaned up.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        self.jobs.finish(job_id, status, result=result, error=error)

    def predict(self, payload: dict[str, Any], hostname: str) -> None:
        request = PredictRequest.decode(payload)
        if not self.begin(request.job_id, hostname):
            return
        try:
            predictor = self.cache.get(request.tenant, request.model, request.version)
            predictions = predictor.predict(request.inputs, request.postprocess or None)
        except Exception as exc:
            self.jobs.finish(request.job_id, "failed", error=self.error_for(request.job_id, exc))
            return
        result = {"model": request.model, "version": predictor.version, "predictions": predictions}
        self.jobs.finish(request.job_id, "succeeded", result=result)


def register_tasks(app: Celery, settings: Settings) -> WorkerRuntime:
    """Register `mlqueue.train` and `mlqueue.predict` on `app`, and the per-process start-up and shutdown."""
    runtime = WorkerRuntime(settings)

    @app.task(name=TRAIN_TASK, bind=True)
    def train(self: Task, payload: dict[str, Any]) -> None:
        runtime.train(payload, self.request.hostname or "unknown")

    @app.task(name=PREDICT_TASK, bind=True)
    def predict(self: Task, payload: dict[str, Any]) -> None:
        runtime.predict(payload, self.request.hostname or "unknown")

    def on_process_init(sender: Any = None, **_: Any) -> None:
        # The sender is the worker's node name (e.g. cpu@host); its queues were chosen before the fork.
        queues = sorted(app.amqp.queues.consume_from)
        runtime.start(str(sender), queues)

    def on_process_shutdown(**_: Any) -> None:
        runtime.stop()

    signals.worker_process_init.connect(on_process_init, weak=False, dispatch_uid=f"mlq-init-{id(app)}")
    signals.worker_process_shutdown.connect(on_process_shutdown, weak=False, dispatch_uid=f"mlq-stop-{id(app)}")
    # With -P solo the worker_process_shutdown signal is not sent; the worker's own shutdown is.
    signals.worker_shutdown.connect(on_process_shutdown, weak=False, dispatch_uid=f"mlq-wstop-{id(app)}")
    return runtime
