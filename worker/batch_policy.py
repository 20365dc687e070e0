"""How the inference consumer applies per-model batching policies (store/serving.py) and priority lanes.

A read from the stream may hold requests of several models. The consumer stops filling a batch when the first
of them has been held its model's `max_queue_delay_ms` (the latency-critical model sets the pace), or when any
model already has `max_batch_size` rows; each model's requests then go through forward passes of at most its
`max_batch_size` rows (a request is never split: one larger than the size is a pass of its own).

Priority lanes: high-priority requests have a stream of their own, read together with the normal one. A batch
takes high requests first; normal requests that do not fit are carried to the next batch, and a normal request
carried for longer than `max_passover_ms` goes first, so a flood of high requests delays normal work by at most
that bound plus one batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

import redis

from store.contract import PredictRequest
from store.serving import POLICY_TTL_S, Policy, effective, read_document

Request = PredictRequest


class Read(Protocol):
    """What the consumer read: a request (None: undecodable), its lane, when it was first read (monotonic)."""

    @property
    def request(self) -> PredictRequest | None: ...

    @property
    def stream(self) -> str: ...

    @property
    def read_at(self) -> float: ...


R = TypeVar("R", bound=Read)


class BatchPolicies:
    """Each model's effective batching policy, its stored document cached for POLICY_TTL_S per process."""

    def __init__(self, client: redis.Redis, defaults: Policy) -> None:
        self.redis = client
        self.defaults = defaults
        self._docs: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._policies: dict[tuple[str, str, str | None], Policy] = {}  # effective policies of the cached docs

    def get(self, request: Request | None) -> Policy:
        if request is None:
            return self.defaults
        key = (request.tenant, request.model)
        now = time.monotonic()
        cached = self._docs.get(key)
        if cached is None or now - cached[0] >= POLICY_TTL_S:
            try:
                doc = read_document(self.redis, *key)
            except redis.RedisError:
                doc = cached[1] if cached else {}
            cached = (now, doc)
            self._docs[key] = cached
            self._policies = {k: v for k, v in self._policies.items() if k[:2] != key}
        policy = self._policies.get((*key, request.alias))
        if policy is None:
            policy = self._policies[(*key, request.alias)] = effective(cached[1], request.alias, self.defaults)
        return policy

    def largest(self) -> int:
        """The most rows one read may take: the default size or the largest size of a model seen recently."""
        sizes = [self.defaults.max_batch_size]
        for tenant, model in list(self._docs):
            doc = self._docs[(tenant, model)][1]
            for level in (doc.get("model", {}), *doc.get("aliases", {}).values()):
                if "max_batch_size" in level:
                    sizes.append(int(level["max_batch_size"]))
        return max(sizes)


def rows_of(request: Request | None) -> int:
    return len(request.inputs) if request is not None else 1


def chunks(requests: Iterable[Any], size: int, rows: Any = rows_of) -> list[list[Any]]:
    """`requests` (items with a `.request`) in runs of at most `size` rows, in order; a larger one runs alone."""
    out: list[list[Any]] = []
    current: list[Any] = []
    filled = 0
    for item in requests:
        n = rows(item.request)
        if current and filled + n > size:
            out.append(current)
            current, filled = [], 0
        current.append(item)
        filled += n
    if current:
        out.append(current)
    return out


def full(items: list[R], cap: int, policies: BatchPolicies) -> bool:
    """Whether the batch in hand should go now: `cap` rows in all, or one model at its own batch size."""
    total, per_model = 0, dict[tuple[str, str, str | None], int]()
    for it in items:
        n = rows_of(it.request)
        total += n
        if it.request is not None:
            key = (it.request.tenant, it.request.model, it.request.alias)
            per_model[key] = per_model.get(key, 0) + n
            if per_model[key] >= policies.get(it.request).max_batch_size:
                return True
    return total >= cap


def hold_until(items: list[R], policies: BatchPolicies) -> float:
    """The monotonic time the batch may wait to: the first of its requests' read time + their model's delay."""
    return min(it.read_at + policies.get(it.request).max_queue_delay_ms / 1000 for it in items)


def pick(items: list[R], cap: int, normal_lane: str, max_passover_s: float) -> tuple[list[R], list[R]]:
    """(the batch, the normal requests carried to the next one): high requests first, unless the oldest normal
    one has been passed over for `max_passover_s`; normal requests beyond `cap` rows wait, high ones never do."""
    high = [it for it in items if it.stream != normal_lane]
    normal = [it for it in items if it.stream == normal_lane]
    if not high or not normal:
        return items, []
    overdue = time.monotonic() - min(it.read_at for it in normal) >= max_passover_s
    batch: list[R] = []
    carried: list[R] = []
    rows = 0
    for it in normal + high if overdue else high + normal:
        n = rows_of(it.request)
        if batch and rows + n > cap and it.stream == normal_lane:
            carried.append(it)
            continue
        batch.append(it)
        rows += n
    return batch, carried
