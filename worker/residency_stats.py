"""The model cache's counters in one worker process: hits, misses, loads, evictions, cold-load seconds.

The cache adds to them under its own lock; a reporter thread (worker/residency_report.py) takes the increments
since its last flush and adds them to the shared Redis hash that /metrics reads (store/residency.py), the way the
batch sizes flow. A hit or a miss counts requests, not lookups: the inference consumer looks a version up once for
all the requests of a batch that name it, and the hit rate is the share of requests whose version was in memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from store.residency import load_seconds_field


@dataclass
class ResidencyCounters:
    """Counters since the last `take()`; thread-safe."""

    counts: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + amount

    def loaded(self, seconds: float) -> None:
        """One cold load that took `seconds`, into the histogram (bucket, sum, count) and the load counter."""
        with self._lock:
            for name, amount in (("loads", 1), (load_seconds_field(seconds), 1), ("load_seconds_sum", seconds)):
                self.counts[name] = self.counts.get(name, 0) + amount

    def take(self) -> dict[str, float]:
        """The increments since the last take (and forget them)."""
        with self._lock:
            out, self.counts = self.counts, {}
        return out

    def give_back(self, counts: dict[str, float]) -> None:
        """Put increments that could not be written back, so that the next flush writes them."""
        with self._lock:
            for name, amount in counts.items():
                self.counts[name] = self.counts.get(name, 0) + amount
