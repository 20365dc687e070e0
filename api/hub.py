"""One Redis pub/sub connection per API process that wakes every request waiting on a job or a tenant.

A waiting request (`?wait=`, `Prefer: wait=`, an event stream) must cost a greenlet, not a Redis connection: with
2,000 idle waiters, one connection each would be 2,000 sockets and 2,000 reads. Instead a listener thread (a greenlet
under gunicorn's gevent worker, where `threading` is patched) owns one subscription connection, SUBSCRIBEs a channel
while someone waits on it, and sets the `threading.Event` of each waiter when a message arrives. The message only
says "something changed": the waiter then reads the record or the event log, which are the truth.

No event may fall between a waiter's read and its subscription, so `listen()` returns only once Redis confirmed the
SUBSCRIBE (confirmations come back in the order the commands were sent on the connection), and the waiter reads
afterwards. When the connection breaks, every waiter is woken to read again, and redis-py re-subscribes on reconnect.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from store.redis_url import client as connect

log = logging.getLogger(__name__)
# A confirmation only fails to come when the connection breaks (then every pending one is released at once), but
# in a burst of thousands of arriving waits the listener may take seconds to be scheduled: be patient.
CONFIRM_TIMEOUT_S = 30.0
RECONNECT_PAUSE_S = 0.5


class Waiter:
    """What one waiting request holds: an event set by the hub whenever its channel had a message."""

    def __init__(self) -> None:
        self._changed = threading.Event()

    def wait(self, timeout: float) -> bool:
        """True when something changed since the last call (then the caller reads again), False on timeout."""
        fired = self._changed.wait(timeout)
        self._changed.clear()
        return fired

    def wake(self) -> None:
        self._changed.set()


class EventHub:
    """Subscribe on demand, fan out to waiters. Thread- and greenlet-safe; started lazily (never before a fork)."""

    def __init__(self, redis_url: str) -> None:
        # No socket timeout on the reading side (it blocks in get_message with its own timeout) and no health check
        # PINGs: a PING sent from a request's greenlet would race the listener for the reply.
        self._client = connect(redis_url, socket_connect_timeout=2.0, socket_keepalive=True, health_check_interval=0)
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Waiter]] = {}
        self._pending: dict[str, deque[threading.Event]] = {}  # SUBSCRIBEs sent, not yet confirmed, in order
        self._pubsub: Any = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @contextmanager
    def listen(self, channel: str) -> Iterator[Waiter]:
        """Wake the yielded Waiter on every message on `channel`; returns once the subscription is confirmed."""
        waiter = Waiter()
        confirmed: threading.Event | None = None
        with self._lock:
            self._start()
            waiters = self._waiters.setdefault(channel, set())
            pending = self._pending.setdefault(channel, deque())
            if not waiters:
                confirmed = threading.Event()
                pending.append(confirmed)
                self._send("subscribe", channel)
            elif pending:  # someone else's SUBSCRIBE is still in flight: wait for the same confirmation
                confirmed = pending[-1]
            waiters.add(waiter)
        try:
            if confirmed is not None and not confirmed.wait(CONFIRM_TIMEOUT_S):
                raise redis.TimeoutError(f"Redis did not confirm the subscription to {channel}")
            yield waiter
        finally:
            with self._lock:
                waiters = self._waiters.get(channel, set())
                waiters.discard(waiter)
                if not waiters:
                    self._waiters.pop(channel, None)
                    self._send("unsubscribe", channel)

    def waiting(self) -> int:
        """How many requests wait on a channel now (for tests and gauges)."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def close(self) -> None:
        self._stopped.set()
        with self._lock:
            if self._pubsub is not None:
                self._pubsub.close()

    # ---- the listener --------------------------------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._pubsub = self._client.pubsub()
            self._thread = threading.Thread(target=self._run, name="mlq-event-hub", daemon=True)
            self._thread.start()

    def _send(self, command: str, channel: str) -> None:
        try:
            getattr(self._pubsub, command)(channel)
        except redis.RedisError as exc:  # the listener reconnects; waiters read again when woken
            log.warning("event hub: %s %s failed: %s", command, channel, exc)
            self._wake_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                message = self._pubsub.get_message(timeout=1.0)
            except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError) as exc:
                log.warning("event hub: connection lost (%s); waking every waiter and reconnecting", exc)
                self._wake_all()
                self._stopped.wait(RECONNECT_PAUSE_S)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        with self._lock:
            if kind == "subscribe":
                pending = self._pending.get(channel)
                if pending:
                    pending.popleft().set()
                if not pending:
                    self._pending.pop(channel, None)
            elif kind == "message":
                for waiter in self._waiters.get(channel, ()):
                    waiter.wake()

    def _wake_all(self) -> None:
        with self._lock:
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.wake()
            for pending in self._pending.values():
                for confirmed in pending:
                    confirmed.set()
            self._pending.clear()
