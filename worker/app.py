"""The Celery app of a worker process, for `celery -A worker.app worker` (the launcher runs exactly that).

The process edge: settings are read here, once, from the environment; everything below takes them as arguments.
Processes that consume the `inference` queue also run the batching consumer of the request stream
(worker/inference.py); `MLQ_INFERENCE_CLAIM_IDLE_S` is how long a dead worker's requests wait before another
worker takes them over (default 30 s; tests shorten it).
"""

import os

from worker.celery_app import make_celery
from worker.inference import CLAIM_IDLE_S, attach
from worker.settings import Settings
from worker.tasks import register_tasks

settings = Settings.from_env()
app = make_celery(settings)
runtime = register_tasks(app, settings)
attach(app, runtime, settings, claim_idle_s=float(os.environ.get("MLQ_INFERENCE_CLAIM_IDLE_S") or CLAIM_IDLE_S))
