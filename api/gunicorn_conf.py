"""gunicorn settings for the API (`mlq api`, `mlq dev`, the Docker image): `gunicorn -c path/to/api/gunicorn_conf.py`
(by path, not `python:api.gunicorn_conf`, which would import the `api` package, and prometheus_client, too early).

- gevent workers: a request that waits for a job or streams its events is a greenlet, not a thread, so one
  process holds thousands of them (docs/operations.md has the measurements); `worker_connections` leaves room for
  MLQ_MAX_WAITS waiters beside the ordinary requests, and the open-files limit is raised to fit.
- Slow clients: gevent's worker gives a client `keepalive` seconds to send a request's headers (slowloris sockets
  are dropped after that); the app bounds each read and write of the body to MLQ_CLIENT_TIMEOUT_S.
- A client that reads nothing for MLQ_CLIENT_TIMEOUT_S (a stalled event stream) is an expected end: its timeout is
  logged at info in one line, not as gunicorn's ERROR "Socket error processing request" with a traceback.
- No control socket: gunicorn 24+ opens one at a fixed per-user path by default, which every `mlq api` on a machine
  would share (and fight over); nothing here uses it.
- Metrics: each worker process writes its counters and gauges to PROMETHEUS_MULTIPROC_DIR and any of them answers a
  scrape with the sum (api/metrics.py). The variable must be set before prometheus_client is imported, hence here,
  at the top; a directory made here is wiped at start and removed at exit.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlq-metrics-")

from prometheus_client import multiprocess  # noqa: E402 - needs the variable above

_MAX_WAITS = int(os.environ.get("MLQ_MAX_WAITS") or 2000)

wsgi_app = "api.wsgi:app"
worker_class = os.environ.get("MLQ_API_WORKER_CLASS") or "gevent"
worker_connections = _MAX_WAITS + 1000
threads = 16  # gthread only (MLQ_API_WORKER_CLASS=gthread): a waiting request holds a thread there
# Seconds for an idle keep-alive connection and (gevent) for a request's headers to be read. Not 5: in a burst of
# thousands of arriving waits a greenlet may wait seconds for the CPU before it reads the headers already sent.
keepalive = 15
timeout = 60  # a worker that does not report for this long is restarted
graceful_timeout = 35  # on SIGTERM, waits (at most 30 s) may end before the worker exits
backlog = 2048
control_socket_disable = True


class ClientTimeoutsAtInfo(Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's logger, but a socket timeout (the app's MLQ_CLIENT_TIMEOUT_S on a client that stopped reading or
    sending) is one info line: it is how a stalled stream is meant to end, not a server error."""

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if isinstance(sys.exc_info()[1], TimeoutError):
            self.info("closed a connection whose client read or sent nothing for MLQ_CLIENT_TIMEOUT_S")
            return
        super().exception(msg, *args, **kwargs)


logger_class = ClientTimeoutsAtInfo


def _raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


_raise_open_files_limit(2 * worker_connections + 256)  # a client socket each, Redis and log files beside


def on_starting(server: Any) -> None:
    # Files of a previous run would be added to this one's counters.
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
