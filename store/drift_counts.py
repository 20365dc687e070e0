"""Live drift counts in Redis: per model version, per 10-minute bucket, one hash of bin counts that expires.

The workers bin a batch's rows and predictions (training/drift_reference.py) and queue the counts here on a
pipeline they send anyway: one script call per version (store/lua/drift_count.lua), one HINCRBY per non-empty
bin inside it; the API adds the buckets of a window back up (`read`) and compares them with the manifest's
reference (training/drift_psi.py). Memory is bounded by construction: a version has at most
MAX_WINDOW_S / BUCKET_S + 2 live hashes (each expires TTL_S after its last write), each with at most one field
per reference bin. A global sorted set lists the versions counted lately (bounded to ACTIVE_MAX), so a /metrics
scrape knows which versions to report without scanning keys.

Hash fields: "n" (rows), "<j>.<b>" (feature j of the reference, bin b), "p.<b>" (prediction bin b).
Torch-free and numpy-free: the API imports it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping

import redis
from redis.client import Pipeline

from store import keys
from store.lua_loader import source

BUCKET_S = 600
MIN_WINDOW_S = BUCKET_S
MAX_WINDOW_S = 24 * 3600
TTL_S = MAX_WINDOW_S + 2 * BUCKET_S  # the oldest bucket a 24 h window reads is still there
ACTIVE_MAX = 200  # versions listed for /metrics; the least recently counted fall off
SCRIPT = "drift_count"
_WINDOW = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}
WINDOW_HELP = "a duration like 10m, 30m, 1h, 6h or 24h, from 10m to 24h"


def parse_window(text: str) -> int:
    """Seconds of a window like "1h"; ValueError (with WINDOW_HELP) when it is malformed or out of range."""
    match = _WINDOW.fullmatch(text)
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)] if match else 0
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"window {text!r} is not {WINDOW_HELP}")
    return seconds


def bucket_of(now: float) -> int:
    return int(now // BUCKET_S)


def _member(tenant: str, model: str, version: int) -> str:
    return json.dumps([tenant, model, version], separators=(",", ":"))


class DriftCounts:
    """Write (on a worker's pipeline) and read (for the API) the live drift bins of model versions."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @staticmethod
    def add_in(
        pipe: Pipeline, tenant: str, model: str, version: int, fields: Mapping[str, int], now: float | None = None
    ) -> None:
        """Queue the counts of one batch of one version (store/lua/drift_count.lua): one HINCRBY per field, the
        bucket's TTL, and the version's place in the active list (trimmed to ACTIVE_MAX and to the last 24 h).

        By EVAL, not EVALSHA: the script rides on pipelines other code sends (the inference consumer's answer),
        whose NOSCRIPT handling reloads only their own scripts. EVAL never answers NOSCRIPT, and Redis keeps the
        compiled script by its SHA1, so what it costs over EVALSHA is sending ~1 KB of source per batch."""
        if not fields:
            return
        now = time.time() if now is None else now
        key = keys.drift_counts(tenant, model, version, bucket_of(now))
        packed = " ".join(f"{field} {int(count)}" for field, count in fields.items())
        args: list[str | int] = [
            TTL_S,
            packed,
            _member(tenant, model, version),
            int(now),
            int(now) - MAX_WINDOW_S,
            ACTIVE_MAX,
        ]
        pipe.eval(source(SCRIPT), 2, key, keys.DRIFT_ACTIVE, *args)

    def read(self, tenant: str, model: str, version: int, window_s: int, now: float | None = None) -> dict[str, int]:
        """The counts of the last `window_s` seconds, summed over buckets: the current bucket and every whole
        bucket the window reaches back to (so at least the window, at most one bucket more)."""
        now = time.time() if now is None else now
        last = bucket_of(now)
        first = bucket_of(now - window_s)
        with self.redis.pipeline(transaction=False) as pipe:
            for bucket in range(first, last + 1):
                pipe.hgetall(keys.drift_counts(tenant, model, version, bucket))
            replies = pipe.execute()
        total: dict[str, int] = {}
        for reply in replies:
            for field, count in (reply or {}).items():
                name = field.decode() if isinstance(field, bytes) else str(field)
                total[name] = total.get(name, 0) + int(count)
        return total

    def active(self, since_s: int, now: float | None = None) -> list[tuple[str, str, int]]:
        """(tenant, model, version) of the versions counted in the last `since_s` seconds, most recent first."""
        now = time.time() if now is None else now
        members = self.redis.zrevrangebyscore(keys.DRIFT_ACTIVE, "+inf", int(now) - since_s, start=0, num=ACTIVE_MAX)
        out: list[tuple[str, str, int]] = []
        for raw in members:
            try:
                tenant, model, version = json.loads(raw if isinstance(raw, str | bytes) else "")
                out.append((str(tenant), str(model), int(version)))
            except (ValueError, TypeError):
                continue  # not written by add_in: ignore it
        return out
