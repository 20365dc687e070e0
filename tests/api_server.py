"""The API under a real gunicorn on loopback, as `mlq api` runs it, on a port the kernel picks (no port race)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from polling import wait_until
from ports import gunicorn_port

from mlqueue.dev import descendants, gunicorn_argv

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
# The gunicorn master's pid of every running `gunicorn()`, by base URL (its command line says only port 0).
MASTER_PIDS: dict[str, int] = {}


def gunicorn_pids(base: str) -> list[int]:
    """The processes serving `base`: the gunicorn master and its workers."""
    master = MASTER_PIDS[base]
    return [master, *descendants(master)]


@contextmanager
def gunicorn(env: dict[str, str], log_path: Path, extra_args: tuple[str, ...] = (), workers: int = 1) -> Iterator[str]:
    """`api.wsgi:app` under gunicorn with `mlq api`'s command line (gevent, api/gunicorn_conf.py), bound to port 0;
    yields its base URL once /healthz answers."""
    argv = [*gunicorn_argv("127.0.0.1", 0, workers)[:-1], *extra_args, "api.wsgi:app"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = ""
    try:
        base = f"http://127.0.0.1:{gunicorn_port(proc, log_path, START_TIMEOUT_S)}"

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                return httpx.get(base + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, START_TIMEOUT_S, what="gunicorn answering /healthz", interval_s=0.1)
        MASTER_PIDS[base] = proc.pid
        yield base
    finally:
        MASTER_PIDS.pop(base, None)
        # SIGQUIT: gunicorn's quick shutdown. The graceful one (SIGTERM) waits up to graceful_timeout for open
        # event streams and waits; at a module's end nobody reads them any more.
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
