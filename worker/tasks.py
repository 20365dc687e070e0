"""The worker's task `mlqueue.train` and the per-process start-up (predictions: worker/inference.py).

The only module of `worker/` that imports the training pipeline (the optimize job, `mlqueue.optimize`, lives in
worker/optimize_task.py and is registered from here); the per-job callbacks it hands `train_model`
(stop check, progress, registration claim, lease heartbeat) are in worker/train_hooks.py. Tasks are registered on
an app by `register_tasks(app, settings)`, called once by `worker/app.py` (the process edge that reads the
settings): closures over one `WorkerRuntime` instead of module-level settings, so importing this module reads no
environment and connects nothing. Per-process resources (Redis, the model cache's contents, the liveness
heartbeat) are created in `worker_process_init`, i.e. after the fork in each prefork child (with -P solo: in the
main process), so the parent that forks never holds a connection, a model or a CUDA context.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import redis
import torch
from celery import Celery, Task, signals

from store.backends import artifact_store, dataset_store, model_registry
from store.contract import (
    BATCH_QUEUE,
    INFERENCE_QUEUE,
    LEASED_TASKS,
    OPTIMIZE_TASK,
    SEARCH_TASK,
    TRAIN_QUEUE,
    TRAIN_TASK,
    JobType,
    TrainRequest,
)
from store.fair import FairQueues, flow_of
from store.jobs import JobStore
from store.leases import Leases, Sweeper, request_drain
from store.liveness import Heartbeat, WorkerLiveness
from store.redis_url import client as redis_client
from store.searches import Searches
from store.settings import Settings
from training.manifest import RecoveredResult, TrainResult
from training.pipeline import train_model
from worker.attempt import Attempt, Ending, LeasedJob, Verdict, job_error, leased_runner, register_leased
from worker.fair_dispatch import FairDispatcher
from worker.model_cache import ModelCache
from worker.residency_report import ResidencyReporter
from worker.train_hooks import progress_reporter, retry_redis

log = logging.getLogger(__name__)


def _device_label() -> str:
    """What this process computes on, for the liveness record (the launcher pins CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return "auto"
    return "cpu" if visible.strip() in ("", "-1") else f"cuda:{visible}"


class WorkerRuntime:
    """What one worker process holds: settings, its Redis client, stores, model cache and heartbeat."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # On MLQ_HOME, or on the artifact store MLQ_ARTIFACTS names (store/backends.py).
        self.registry = model_registry(settings, lambda: self.redis)
        self.datasets = dataset_store(settings)
        self.store = artifact_store(settings)
        self.cache = ModelCache(
            self.registry,
            budget_bytes=settings.model_memory_mb * 1024 * 1024,
            pins=[*((None, None, alias) for alias in settings.pin_aliases), *settings.preload],
        )
        self._redis: redis.Redis | None = None
        self._jobs: JobStore | None = None
        self._leases: Leases | None = None
        self._heartbeat: Heartbeat | None = None
        self._sweeper: Sweeper | None = None
        self._searches: Searches | None = None
        self._residency: ResidencyReporter | None = None
        self._fair: FairQueues | None = None
        self.dispatcher: FairDispatcher | None = None  # set by register_tasks, once every job type has its runner
        self.app: Celery | None = None  # set by register_tasks: re-sends go through it, by task name

    @property
    def redis(self) -> redis.Redis:
        # Opened lazily: a client created before a fork would be shared by parent and child.
        if self._redis is None:
            self._redis = redis_client(self.settings.redis_url, decode_responses=True)
        return self._redis

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore(self.redis, ttl_s=self.settings.job_ttl_s)
        return self._jobs

    @property
    def leases(self) -> Leases:
        if self._leases is None:
            self._leases = Leases(
                self.jobs,
                stale_s=self.settings.stale_job_s,
                max_attempts=self.settings.max_attempts,
                time_limit_s=self.settings.job_time_limit_s,
            )
        return self._leases

    @property
    def fair(self) -> FairQueues:
        if self._fair is None:
            self._fair = FairQueues(self.redis, self.settings.tenant_weights, self.settings.max_running_per_tenant)
        return self._fair

    def run_fair(self, queue: str, job_type: str, payload: dict[str, Any], hostname: str) -> None:
        """A message of `queue` arrived: run the job that is fairly next (worker/fair_dispatch.py)."""
        assert self.dispatcher is not None, "register_tasks() sets the dispatcher"
        self.dispatcher.run(queue, job_type, payload, hostname)

    @property
    def searches(self) -> Searches:
        if self._searches is None:
            self._searches = Searches(self.jobs, self.registry, self.settings.searches_dir, self.store)
        return self._searches

    def trial_changed(self, request: TrainRequest, hostname: str) -> None:
        """A search's trial started or ended: update the search's progress (and conclude it after the last)."""
        if request.parent is None:
            return
        try:
            retry_redis(
                lambda: self.searches.trial_changed(request.parent or "", hostname, request.job_id),
                f"search {request.parent}: trial {request.job_id} changed",
                30.0,
            )
        except redis.RedisError:
            log.exception("search %s: progress not updated after trial %s", request.parent, request.job_id)

    def send_train(self, payload: dict[str, Any]) -> None:
        """Put a training (or an optimize job: its request has a `method`) back on the `train` queue, by name."""
        assert self.app is not None, "register_tasks() sets the app"
        task = OPTIMIZE_TASK if "method" in payload else TRAIN_TASK
        self.fair.enqueue(TRAIN_QUEUE, payload["tenant"], payload["job_id"], flow_of(payload))
        self.app.send_task(task, args=[payload], task_id=payload["job_id"], queue=TRAIN_QUEUE)

    def resend(self, payload: dict[str, Any]) -> None:
        """Put a job the sweeper requeued back on the queue of its type (a training, a batch prediction)."""
        assert self.app is not None, "register_tasks() sets the app"
        job = self.jobs.get(payload["job_id"])
        task, queue = LEASED_TASKS.get(job["type"] if job else "train", (TRAIN_TASK, TRAIN_QUEUE))
        self.fair.enqueue(queue, payload["tenant"], payload["job_id"], flow_of(payload))
        self.app.send_task(task, args=[payload], task_id=payload["job_id"], queue=queue)

    def start(self, hostname: str, queues: list[str]) -> None:
        """Runs once per worker process, after the fork: threads, preloaded models, then the heartbeat."""
        torch.set_num_threads(self.settings.torch_threads)
        started = time.monotonic()
        loaded = self.cache.preload(self.settings.preload)
        log.info(
            "%s (pid %d) ready on %s: preloaded %s in %.1f s",
            hostname,
            os.getpid(),
            ",".join(queues),
            loaded or "no models",
            time.monotonic() - started,
        )
        # Only now is the process counted as a worker: its models are in memory.
        self._heartbeat = Heartbeat(
            WorkerLiveness(self.redis),
            hostname,
            queues,
            self.settings.heartbeat_s,
            _device_label(),
            models=self.cache.describe,
        )
        self._heartbeat.start()
        if INFERENCE_QUEUE in queues or BATCH_QUEUE in queues:  # the processes that serve from the model cache
            name = f"{hostname}:{os.getpid()}"
            self._residency = ResidencyReporter(self.redis, self.cache, name, _device_label()).start()
        if TRAIN_QUEUE in queues or BATCH_QUEUE in queues:
            # Every train and batch process sweeps: whichever is alive puts a dead worker's job back within seconds.
            self._sweeper = Sweeper(self.leases, self.resend, self.settings.stale_job_s / 2, on_ended=self._swept)
            self._sweeper.start()

    def _swept(self, job_id: str) -> None:
        # The sweeper ended a training whose worker was lost; if it was a search's trial, the search may be done.
        job = self.jobs.get(job_id)
        if job is not None and job["type"] == "train":
            self.trial_changed(TrainRequest.decode(self.leases.train_payload(job)), "sweeper")

    def stop(self) -> None:
        if self._residency is not None:
            self._residency.stop()
            self._residency = None
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def error_for(self, job_id: str, exc: BaseException) -> dict[str, Any]:
        """The job error for `exc`: the library's own errors as they are, anything else as internal."""
        return job_error(job_id, exc, self.settings.job_time_limit_s)


class TrainJob(LeasedJob):
    """A training (or a search's trial) as a leased job: it checkpoints per epoch and registers one version."""

    checkpoints = True
    kept = "checkpoint kept"

    def __init__(self, runtime: WorkerRuntime, request: TrainRequest, hostname: str) -> None:
        self.runtime, self.request, self.hostname = runtime, request, hostname
        self.job_id = request.job_id
        # A search's trial saves its model for the search to compare, and registers nothing itself.
        self.save_to = (
            runtime.searches.trial_dir(request.tenant, request.parent, request.job_id) if request.parent else None
        )

    def run(self, attempt: Attempt) -> TrainResult | RecoveredResult:
        request, runtime = self.request, self.runtime
        return train_model(
            data_path=runtime.datasets.path(request.tenant, request.dataset_id),
            target=request.target,
            algorithm=request.algorithm,
            model_name=request.model,
            registry=runtime.registry,
            tenant=request.tenant,
            task=request.task,
            features=request.features,
            params=request.params,
            preprocessing=request.preprocessing,
            split=request.split,
            device=request.device,
            checkpoint_dir=attempt.checkpoint_dir,
            on_progress=progress_reporter(runtime.jobs, self.job_id),
            should_stop=attempt.should_stop,
            dataset_id=request.dataset_id,
            job_id=self.job_id,
            claim_registration=attempt.registration_claim(request.tenant, request.model),
            warm_start=request.warm_start,
            save_to=self.save_to,
        )

    def resend(self) -> None:
        self.runtime.send_train(self.request.encode())

    def on_begin(self, started: bool) -> None:
        self.runtime.trial_changed(self.request, self.hostname)

    def settle(self, attempt: Attempt, verdict: Verdict) -> Verdict:
        request = self.request
        if verdict.ending is Ending.SUCCEEDED and self.save_to is not None and request.parent:
            try:  # before the trial is final: whoever concludes the search may be on another host
                self.runtime.searches.publish_trial(request.tenant, request.parent, self.job_id)
            except Exception as exc:  # noqa: BLE001 - any failure to publish fails the trial
                return Verdict(Ending.FAILED, error=self.runtime.error_for(self.job_id, exc))
        return verdict

    def on_recorded(self, verdict: Verdict) -> None:
        self.runtime.trial_changed(self.request, self.hostname)


def register_tasks(app: Celery, settings: Settings) -> WorkerRuntime:
    """Register `mlqueue.train` on `app`, and the per-process start-up and shutdown.

    Online predictions do not go through Celery: worker/inference.py serves them from a Redis Stream."""
    runtime = WorkerRuntime(settings)
    runtime.app = app
    # Celery logs "Task mlqueue.train[…] succeeded" whenever the task function returns, and it returns for
    # failed and cancelled jobs too (their outcome is the job record, not an exception). WorkerRuntime logs each
    # job's real outcome instead; Celery's own warnings and errors (time limits, lost workers) still show.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)

    def train_job(payload: dict[str, Any], host: str) -> TrainJob:
        return TrainJob(runtime, TrainRequest.decode(payload), host)

    register_leased(app, TRAIN_TASK, runtime, train_job, fair=(TRAIN_QUEUE, JobType.TRAIN.value))

    @app.task(name=SEARCH_TASK, bind=True)  # type: ignore[untyped-decorator]  # celery has no type hints
    def search(self: Task, payload: dict[str, Any]) -> None:
        # Quick: it only creates and sends the trials, which then spread over every train worker.
        runtime.run_fair(TRAIN_QUEUE, JobType.SEARCH.value, payload, self.request.hostname or "unknown")

    from worker.batch import batch_job
    from worker.optimize_task import optimize_job, register_optimize

    register_optimize(app, runtime)
    from worker.rollout_task import register_rollout, rollout_job

    register_rollout(app, runtime)
    # Whichever message a worker takes, it runs the job that is fairly next, with the runner of that job's type.
    runtime.dispatcher = FairDispatcher(
        lambda: runtime.fair,
        lambda: runtime.jobs,
        {
            JobType.TRAIN.value: leased_runner(runtime, train_job),
            JobType.OPTIMIZE.value: leased_runner(runtime, optimize_job(runtime)),
            JobType.SEARCH.value: lambda payload, host: runtime.searches.fan_out(payload, host, runtime.send_train),
            JobType.BATCH_PREDICT.value: leased_runner(runtime, batch_job(runtime)),
            JobType.ROLLOUT.value: leased_runner(runtime, rollout_job(runtime)),
        },
    )

    def on_process_init(sender: Any = None, **_: Any) -> None:
        # The sender is the worker's node name (e.g. cpu@host); its queues were chosen before the fork.
        queues = sorted(app.amqp.queues.consume_from)
        runtime.start(str(sender), queues)

    def on_process_shutdown(**_: Any) -> None:
        runtime.stop()

    def on_shutting_down(sender: Any = None, how: str = "Warm", **_: Any) -> None:
        # Main process, on SIGTERM/SIGINT (warm) or SIGQUIT (cold): tell this worker's trainings how long they
        # have. They finish if they can; otherwise they checkpoint, requeue and return, and the worker exits.
        grace = settings.shutdown_grace_s if how == "Warm" else 0.0
        try:
            request_drain(settings.redis_url, str(sender), grace)
        except redis.RedisError as exc:
            log.warning("could not announce the shutdown of %s: %s", sender, exc)

    signals.worker_shutting_down.connect(on_shutting_down, weak=False, dispatch_uid=f"mlq-drain-{id(app)}")
    signals.worker_process_init.connect(on_process_init, weak=False, dispatch_uid=f"mlq-init-{id(app)}")
    signals.worker_process_shutdown.connect(on_process_shutdown, weak=False, dispatch_uid=f"mlq-stop-{id(app)}")
    # With -P solo the worker_process_shutdown signal is not sent; the worker's own shutdown is.
    signals.worker_shutdown.connect(on_process_shutdown, weak=False, dispatch_uid=f"mlq-wstop-{id(app)}")
    return runtime
