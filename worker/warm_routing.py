"""Warm routing: a request whose model version this worker does not hold goes to a worker that does.

Every inference consumer reads the one request stream (worker/inference.py), so whichever reads a request first
gets it. Before serving a batch, the consumer looks at the requests whose version is not in its memory: when
another live consumer holds that version (its name is in the version's warm set, `mlq:t:{tenant}:warm:{name}:
{version}`, which each consumer keeps equal to its cache) and is not busy (fewer than `busy_entries` requests
pending), the entries are handed to it: XCLAIM ... JUSTID makes that consumer their owner in the stream's pending
list (no delivery counted), and an entry on its doorbell stream, which it reads in the same XREADGROUP as the
request stream, names them; it then reads them (XRANGE) and serves them. So a cold load happens only when no
live worker holds the version, or all that do are busy (then a second copy is worth loading).

Delivery stays at least once: a handed entry is in the stream's pending list under its new owner; if that worker
dies before answering, the usual take-over after MLQ_INFERENCE_CLAIM_IDLE_S serves it. A handed request is never
handed on again (no ping-pong when the holder evicted the version meanwhile: it loads it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from store import keys
from store.inference_queue import GROUP, STREAM
from worker.model_cache import Key, ModelCache

if TYPE_CHECKING:
    from worker.stream_item import Item

log = logging.getLogger(__name__)

WARM_TTL_S = 24 * 3600  # a warm set no consumer touched for a day belongs to consumers long gone
DOORBELL_MAXLEN = 1000


class WarmRouter:
    def __init__(self, client: redis.Redis, cache: ModelCache, name: str, busy_entries: int) -> None:
        self.redis = client
        self.cache = cache
        self.name = name  # the consumer's name in the group: "{hostname}:{pid}", its liveness key's suffix
        self.busy_entries = busy_entries
        self.doorbell = keys.inference_doorbell(name)
        self._published: set[Key] = set()
        self._picked: set[str] = set()  # entries handed to this consumer, in the batch being read

    def ensure(self) -> None:
        try:
            self.redis.xgroup_create(self.doorbell, GROUP, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.publish()

    def stop(self) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self._published:
                pipe.srem(keys.warm_holders(*key), self.name)
            pipe.delete(self.doorbell)
            pipe.execute()
        self._published = set()

    def publish(self) -> None:
        """Make the warm sets say what this consumer holds now (one round trip, only when it changed)."""
        now = set(self.cache.loaded())
        if now == self._published:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for key in now - self._published:
                pipe.sadd(keys.warm_holders(*key), self.name)
                pipe.expire(keys.warm_holders(*key), WARM_TTL_S)
            for key in self._published - now:
                pipe.srem(keys.warm_holders(*key), self.name)
            pipe.execute()
        self._published = now

    def picked_up(self, entries: Sequence[Any]) -> list[tuple[Any, Any]]:
        """The request entries named by doorbell `entries` (raw XREADGROUP entries), as (id, fields)."""
        rings = [entry_id for entry_id, _ in entries]
        ids: list[str] = []
        for _, fields in entries:
            raw = (fields or {}).get(b"ids") or b""
            ids += [i for i in raw.decode().split(",") if i]
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.doorbell, GROUP, *rings)
            pipe.xdel(self.doorbell, *rings)
            for entry_id in ids:
                pipe.execute_command("XRANGE", STREAM, entry_id, entry_id, **{redis.client.NEVER_DECODE: []})
            replies = pipe.execute()[2:]
        found = [entry for reply in replies for entry in reply or []]  # gone: answered meanwhile
        self._picked.update(e[0].decode() if isinstance(e[0], bytes) else e[0] for e in found)
        return found

    def route(self, items: list[Item]) -> list[Item]:
        """The items this consumer serves itself; the others are handed to warm consumers."""
        self.publish()
        picked, self._picked = self._picked, set()
        loaded = set(self.cache.loaded())
        cold: dict[Key, list[Item]] = {}
        for it in items:
            request = it.request
            if not it.run or request is None or it.entry_id in picked or not isinstance(request.version, int):
                continue  # an alias or "latest" is resolved where it is served; rare on the stream
            if it.stream != STREAM:
                continue  # a high-priority request is served where it was read: waiting for a hand-off costs more
            key = (request.tenant, request.model, request.version)
            if key not in loaded:
                cold.setdefault(key, []).append(it)
        if not cold:
            return items
        try:
            handed = self._hand_off(cold)
        except redis.RedisError as exc:  # serving them here is always correct, only slower
            log.warning("warm routing: could not hand requests over (%s); serving them here", exc)
            return items
        return [it for it in items if it.entry_id not in handed] if handed else items

    def _hand_off(self, cold: dict[Key, list[Item]]) -> set[str]:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in cold:
                pipe.smembers(keys.warm_holders(*key))
            pipe.xpending(STREAM, GROUP)
            *members, summary = pipe.execute()
        pending = {str(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}
        wanted = {
            key: [m for m in holders if m != self.name and pending.get(m, 0) < self.busy_entries]
            for key, holders in zip(cold, members, strict=True)
        }
        names = sorted({m for holders in wanted.values() for m in holders})
        if not names:
            return set()
        with self.redis.pipeline(transaction=False) as pipe:
            for n in names:  # a dead consumer's name stays in warm sets until its key expires: skip it
                pipe.exists(keys.WORKER_PREFIX + n)
            alive = dict(zip(names, (bool(x) for x in pipe.execute()), strict=True))
        handed: set[str] = set()
        with self.redis.pipeline(transaction=False) as pipe:
            for key, holders in wanted.items():
                live = [m for m in holders if alive.get(m)]
                if not live:
                    continue
                target = min(live, key=lambda m: pending.get(m, 0))
                ids: list[Any] = [it.entry_id for it in cold[key]]
                pipe.xclaim(STREAM, GROUP, target, 0, ids, justid=True)
                pipe.xadd(keys.inference_doorbell(target), {"ids": ",".join(ids)}, maxlen=DOORBELL_MAXLEN)
                handed.update(ids)
            if handed:
                pipe.execute()
        if handed:
            self.cache.counters.add("handoffs", len(handed))
        return handed
