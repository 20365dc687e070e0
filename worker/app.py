"""The Celery app of a worker process, for `celery -A worker.app worker` (the launcher runs exactly that).

The process edge: settings are read here, once, from the environment; everything below takes them as arguments.
Processes that consume the `inference` queue also run the batching consumer of the request stream
(worker/inference.py); the `batch` queue's task is worker/batch.py.
"""

from worker.batch import register_batch
from worker.celery_app import make_celery
from worker.inference import attach
from worker.settings import Settings
from worker.tasks import register_tasks

settings = Settings.from_env()
app = make_celery(settings)
runtime = register_tasks(app, settings)
register_batch(app, runtime)
attach(app, runtime, settings)
