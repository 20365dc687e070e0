"""A daemon thread per serving worker process that writes its model cache's counters and usage to Redis.

Every `interval_s` it adds the counter increments since its last write to the shared hash (a failed write keeps
them for the next one) and rewrites the process's record of what it holds; `stop()` writes a last time and
removes the record. Off the request path: a batch never waits on it.
"""

from __future__ import annotations

import logging
import threading

import redis

from store.residency import add_counts, forget_resident, report_resident
from worker.model_cache import ModelCache

log = logging.getLogger(__name__)


class ResidencyReporter:
    def __init__(self, client: redis.Redis, cache: ModelCache, name: str, device: str, interval_s: float = 1.0) -> None:
        self.redis = client
        self.cache = cache
        self.name = name  # "{hostname}:{pid}", as the inference consumer and the liveness key name the process
        self.device = device
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlq-residency", daemon=True)

    def start(self) -> ResidencyReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)
        self.flush()
        try:
            forget_resident(self.redis, self.name)
        except redis.RedisError as exc:
            log.warning("could not remove the residency record of %s: %s", self.name, exc)

    def flush(self) -> None:
        counts = self.cache.counters.take()
        try:
            if counts:
                add_counts(self.redis, counts)
        except redis.RedisError as exc:
            self.cache.counters.give_back(counts)
            log.warning("residency counters of %s not written: %s", self.name, exc)
        record = {
            "bytes": self.cache.resident_bytes(),
            "budget": self.cache.budget_bytes,
            "models": self.cache.describe(),
            "device": self.device,
        }
        try:
            report_resident(self.redis, self.name, record)
        except redis.RedisError as exc:
            log.warning("residency record of %s not written: %s", self.name, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
