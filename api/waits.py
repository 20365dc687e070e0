"""Waiting requests: the caps on how many a tenant and the process may hold, and the wait itself.

A wait (`?wait=`, `Prefer: wait=`) or an event stream is cheap under gunicorn's gevent worker (a greenlet and no
Redis connection, see api/hub.py), but not free: each holds a socket and some memory. The caps are counted per API
process (MLQ_MAX_WAITS in all, MLQ_MAX_WAITS_PER_TENANT for one tenant; waits and streams together). Past a cap a
wait is not refused: it answers at once, as if the client had not asked to wait (202 + Location + Retry-After), and
the client polls; a stream past the cap is a 429. A waiting request whose client has gone stops waiting.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from typing import Any

import redis
from flask import request

from api.services import services
from store.jobs import FINAL
from store.records import JobRecord

log = logging.getLogger(__name__)
DISCONNECT_CHECK_S = 5.0  # how often a waiter looks whether its client is still there
RECHECK_S = 30.0  # a waiter re-reads the record this often even without a wake-up (a lost message costs no more)


def client_socket() -> socket.socket | None:
    """The request's client socket where the server exposes it (gunicorn, werkzeug), else None."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


def client_gone(sock: socket.socket | None) -> bool:
    """True when the client closed or reset its connection (a readable socket with nothing to read).

    A peek that never blocks: on gevent's socket, at its underlying non-blocking socket (gevent's own select and
    recv would wait, and under load its select reported idle sockets as readable, ending waits at once); elsewhere a
    select with no timeout first. A client that pipelines its next request has data to read: it is still there.
    """
    if sock is None:
        return False
    raw = getattr(sock, "_sock", None)  # gevent: the real socket, always non-blocking
    try:
        if raw is None:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        return bool(raw.recv(1, socket.MSG_PEEK) == b"")
    except BlockingIOError:
        return False  # nothing to read: connected and quiet
    except (OSError, ValueError):
        return True


def wait_for_job(job: JobRecord, seconds: float) -> JobRecord:
    """`job` once it is final, or as it is after `seconds` (also when the client left, or past the caps).

    Holds a wait slot of the job's tenant meanwhile; with none free it answers at once. Woken by the hub on every
    change of the job; reads the record after the subscription is confirmed, so a change between the read and the
    wait cannot be missed.
    """
    svc = services()
    if seconds <= 0 or job["status"] in FINAL:
        return job
    with svc.waits.hold(job["tenant"], "wait") as held:
        if not held:
            return job
        try:
            return _wait(svc, job, seconds)
        except redis.RedisError as exc:  # the hub could not subscribe: answer as if no wait was asked; they poll
            log.warning("wait on %s ended early: %s", job["id"], exc)
            return svc.jobs.get(job["id"]) or job


def _wait(svc: Any, job: JobRecord, seconds: float) -> JobRecord:
    sock = client_socket()
    deadline = time.monotonic() + seconds
    with svc.hub.listen(svc.jobs.channel(job["id"])) as waiter:
        current = svc.jobs.get(job["id"])
        last_read = time.monotonic()
        while current is not None and current["status"] not in FINAL:
            left = deadline - time.monotonic()
            if left <= 0 or client_gone(sock):
                break
            changed = waiter.wait(min(left, DISCONNECT_CHECK_S))
            if changed or time.monotonic() - last_read >= RECHECK_S:
                current = svc.jobs.get(job["id"])
                last_read = time.monotonic()
        return current or job
