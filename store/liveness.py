"""Which worker processes are alive and ready, per queue. Stdlib + redis only: the API's /readyz reads it.

Each worker process writes one key with a short TTL, refreshed by a daemon thread; a process that dies or hangs
simply lets its key expire. The first write happens only after the process has loaded its preloaded models, so a
worker that is counted is a worker that can answer at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from store import keys

log = logging.getLogger(__name__)

KEY_PREFIX = keys.WORKER_PREFIX


class WorkerLiveness:
    """Reads and writes the liveness keys `mlq:worker:{hostname}:{pid}` (one per worker process)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._ready_at: dict[str, float] = {}

    @staticmethod
    def key(hostname: str, pid: int | None = None) -> str:
        # Several prefork children share one Celery hostname; the pid keeps their keys apart.
        return keys.worker(hostname, os.getpid() if pid is None else pid)

    def beat(
        self, hostname: str, queues: list[str], ttl_s: float, device: str = "cpu", models: list[str] | None = None
    ) -> None:
        """Announce (or refresh) this process as alive and consuming `queues` for `ttl_s` seconds.

        `models` lists what the process holds in memory ("tenant/name:version"), for operators and tests.
        """
        key = self.key(hostname)
        ready_at = self._ready_at.setdefault(key, time.time())
        record = {
            "hostname": hostname,
            "queues": sorted(queues),
            "pid": os.getpid(),
            "device": device,
            "ready_at": ready_at,
            "models": models or [],
        }
        self.redis.set(key, json.dumps(record), px=max(1, int(ttl_s * 1000)))

    def forget(self, hostname: str) -> None:
        """Remove this process's key at a clean shutdown, so /readyz drops it without waiting for the TTL."""
        self._ready_at.pop(self.key(hostname), None)
        self.redis.delete(self.key(hostname))

    def workers(self) -> list[dict[str, Any]]:
        """The records of every live worker process, in no particular order."""
        keys = list(self.redis.scan_iter(match=KEY_PREFIX + "*", count=500))
        if not keys:
            return []
        out = []
        for raw in self.redis.mget(keys):
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                out.append(json.loads(raw))
            except ValueError:
                log.warning("ignoring a malformed liveness record: %r", raw)
        return out

    def counts(self) -> dict[str, int]:
        """Live worker processes per queue, e.g. {"train": 1, "inference": 2}."""
        counts: dict[str, int] = {}
        for record in self.workers():
            for queue in record.get("queues", []):
                counts[queue] = counts.get(queue, 0) + 1
        return counts


class Heartbeat:
    """A daemon thread that refreshes one process's liveness key every `interval_s` (TTL: 3 intervals)."""

    def __init__(
        self,
        liveness: WorkerLiveness,
        hostname: str,
        queues: list[str],
        interval_s: float,
        device: str = "cpu",
        models: Callable[[], list[str]] | None = None,
    ) -> None:
        self.liveness = liveness
        self.models = models or list
        self.hostname = hostname
        self.queues = queues
        self.interval_s = max(0.05, interval_s)
        self.device = device
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlq-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        # The first beat is synchronous: when start() returns, the process is visible as ready.
        try:
            self._beat()
        except redis.RedisError as exc:
            log.warning("could not announce %s yet (%s); retrying every %.1f s", self.hostname, exc, self.interval_s)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 1)  # no beat may land after the key is removed
        try:
            self.liveness.forget(self.hostname)
        except redis.RedisError as exc:
            log.warning("could not remove the liveness key of %s: %s", self.hostname, exc)

    def _beat(self) -> None:
        self.liveness.beat(self.hostname, self.queues, self.interval_s * 3, self.device, self.models())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat()
            except redis.RedisError as exc:
                # Redis may come back; the key simply expires meanwhile and /readyz reports fewer workers.
                log.warning("liveness heartbeat failed: %s", exc)
