"""The Celery application factory. Torch-free: the API builds the same app to send tasks by name.

Every setting here answers a known problem of long ML jobs on a Redis broker (see the gotchas notes):
JSON only, late acks with prefetch 1, a visibility timeout longer than any job, no duplicate runs after a
broker connection loss, and a long wait for children that load models before they report up.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from store import kombu_transport as broker
from store import redis_url
from store.contract import BATCH_PREDICT_TASK, BATCH_QUEUE, INFERENCE_QUEUE, OPTIMIZE_TASK, TRAIN_QUEUE, TRAIN_TASK
from store.settings import Settings

# The soft limit fires this much earlier than the hard one, so a task can still record why it stopped.
SOFT_LIMIT_MARGIN_S = 60


def soft_time_limit(hard_s: int) -> int:
    """A soft limit a little below the hard one (at most 10 % below for very short limits)."""
    return max(1, hard_s - min(SOFT_LIMIT_MARGIN_S, max(1, hard_s // 10)))


def make_celery(settings: Settings) -> Celery:
    """A Celery app on `settings.redis_url` with the queues, routes and reliability settings of mlqueue.

    No task is registered here: the API only sends tasks by name; a worker process registers them with
    `worker.tasks.register_tasks(app, settings)` (see `worker/app.py`).
    """
    # With Sentinel (MLQ_REDIS_URL=redis+sentinel://...) kombu's sentinel transport finds the primary itself.
    broker_url, sentinel_options = redis_url.kombu_broker(settings.redis_url)
    app = Celery("mlqueue", broker=broker_url, backend=broker_url, set_as_current=False)
    # Redis redelivers a message that is not acked within the visibility timeout, even while it still runs.
    # It must exceed the longest job plus its queue wait, and be set in all three places (celery#5935).
    transport = {"visibility_timeout": settings.visibility_timeout_s, **sentinel_options}
    app.conf.update(
        # Pickle is never accepted: a message is data, never code.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        # Each queue gets its own direct exchange and routing key. A bare Queue(name) inherits the default
        # exchange *and* routing key, so Redis' binding table would list both queues under key "train":
        # Celery publishes straight to the named queue, but anything routing by exchange would hit both.
        task_queues=tuple(
            Queue(q, Exchange(q, type="direct"), routing_key=q) for q in (TRAIN_QUEUE, INFERENCE_QUEUE, BATCH_QUEUE)
        ),
        task_default_queue=TRAIN_QUEUE,
        task_default_exchange=TRAIN_QUEUE,
        task_default_routing_key=TRAIN_QUEUE,
        task_routes={
            TRAIN_TASK: {"queue": TRAIN_QUEUE},
            BATCH_PREDICT_TASK: {"queue": BATCH_QUEUE},
            OPTIMIZE_TASK: {"queue": TRAIN_QUEUE},
        },
        # At-least-once: a job is acked when it ends, and a worker holds one job per process, so a second
        # training never waits behind the first on a busy worker. Inference workers raise the prefetch on
        # their command line.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # A child killed mid-job (OOM, crash) gives the message back; the job record's attempt counter
        # stops a job that always kills its worker from looping forever (see tasks.py).
        task_reject_on_worker_lost=True,
        broker_transport_options=transport,
        result_backend_transport_options=dict(transport),
        visibility_timeout=settings.visibility_timeout_s,
        # Unacked late-ack tasks are redelivered on a connection loss; don't keep running the original too.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Children load their models in worker_process_init before reporting up; the default 4 s is too short.
        worker_proc_alive_timeout=180,
        # The job record in Redis is the source of truth; Celery's results would only duplicate it.
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        broker_connection_retry_on_startup=True,
        # One item on the queue that is not a kombu message must not stop the worker (see store/kombu_transport.py).
        broker_transport=_transport(settings.redis_url),
        task_time_limit=settings.job_time_limit_s,
        task_soft_time_limit=soft_time_limit(settings.job_time_limit_s),
        worker_hijack_root_logger=False,
        # A warm shutdown (SIGTERM) gives running jobs this long, then requeues them for another worker.
        worker_soft_shutdown_timeout=30.0,
        # Revokes and remote control are not how mlqueue cancels (a flag in Redis is); events are not used.
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def _transport(url: str) -> str | None:
    """Our kombu transport (it drops a malformed message instead of dying) for redis:// and Sentinel brokers."""
    if redis_url.is_sentinel(url):
        return broker.SENTINEL_TRANSPORT
    return broker.TRANSPORT if url.startswith("redis://") else None
