"""The Celery app of a worker process, for `celery -A worker.app worker` (the launcher runs exactly that).

The process edge: settings are read here, once, from the environment; everything below takes them as arguments.
Processes that consume the `inference` queue also run the batching consumer of the request stream
(worker/inference.py); the `batch` queue's task is worker/batch.py.
"""

import logging
import sys

from store import redaction
from store.settings import Settings
from worker.threads import limit_threads

settings = Settings.from_env()
redaction.install(settings)  # before anything logs: credentials never reach a log line (botocore's debug logs)
# Before worker.tasks and worker.inference import torch (and numpy's BLAS): thread pools are sized at load.
if "torch" in sys.modules:
    logging.getLogger(__name__).warning("torch was imported before worker.app; OMP_NUM_THREADS comes too late")
limit_threads(settings.torch_threads)

from store.celery_config import make_celery  # noqa: E402
from worker.batch import register_batch  # noqa: E402 - after limit_threads, on purpose
from worker.fast_exit import install as install_fast_exit  # noqa: E402
from worker.inference import attach  # noqa: E402
from worker.tasks import register_tasks  # noqa: E402

app = make_celery(settings)
runtime = register_tasks(app, settings)
register_batch(app, runtime)
attach(app, runtime, settings)
install_fast_exit()  # after torch is loaded (above): its exit hooks cost seconds per worker stop
