"""The per-process caps on waits and streams in progress (`Services.waits`), apart from api/waits.py, which waits:
api/services.py holds one, and api/waits.py reads the services, so the two stay out of each other's imports."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class WaitSlots:
    """Counters of the waits and streams in progress, by tenant and in all, with their caps (per process)."""

    def __init__(self, max_total: int, max_per_tenant: int, gauges: dict[str, Any] | None = None) -> None:
        self.max_total = max_total
        self.max_per_tenant = max_per_tenant
        self._gauges = gauges or {}
        self._lock = threading.Lock()
        self._by_tenant: dict[str, int] = {}
        self.total = 0
        self.by_kind: dict[str, int] = {"wait": 0, "stream": 0}

    def acquire(self, tenant: str, kind: str) -> bool:
        """Take a slot (True), or False when the process or the tenant is at its cap; `release()` gives it back."""
        with self._lock:
            if self.total >= self.max_total or self._by_tenant.get(tenant, 0) >= self.max_per_tenant:
                return False
            self.total += 1
            self._by_tenant[tenant] = self._by_tenant.get(tenant, 0) + 1
            self.by_kind[kind] += 1
        if kind in self._gauges:
            self._gauges[kind].inc()
        return True

    def release(self, tenant: str, kind: str) -> None:
        with self._lock:
            self.total -= 1
            self.by_kind[kind] -= 1
            left = self._by_tenant[tenant] - 1
            if left:
                self._by_tenant[tenant] = left
            else:
                del self._by_tenant[tenant]
        if kind in self._gauges:
            self._gauges[kind].dec()

    @contextmanager
    def hold(self, tenant: str, kind: str) -> Iterator[bool]:
        """Yield True with a slot held until the block ends, or False (nothing held) when a cap is reached."""
        held = self.acquire(tenant, kind)
        try:
            yield held
        finally:
            if held:
                self.release(tenant, kind)
