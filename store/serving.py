"""Per-model serving policies: how the inference workers batch a model's requests and how many may queue.

One JSON document per model in Redis (`store.keys.serving_policy`): `{"model": {...}, "aliases": {"production":
{...}}}`, each level holding any of `max_batch_size` (rows in one forward pass), `max_queue_delay_ms` (how long a
worker may hold the first request of a batch to fill it) and `max_queued` (requests of the model waiting on the
stream before a new one is refused with 429; 0: no cap). A request's policy: its alias's values, else the model's,
else the process defaults (MLQ_BATCH_MAX_SIZE, MLQ_BATCH_MAX_DELAY_MS, no cap). The API writes them
(`PUT /v1/models/{name}/serving`) and reads `max_queued`; the inference workers read the batching ones
(worker/batch_policy.py), each process caching a model's document for POLICY_TTL_S.
Stdlib + redis only (the API imports it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import redis

from store import keys

FIELDS = ("max_batch_size", "max_queue_delay_ms", "max_queued")
POLICY_TTL_S = 1.0  # a changed policy reaches every worker and API process within this


@dataclass(frozen=True)
class Policy:
    max_batch_size: int
    max_queue_delay_ms: float
    max_queued: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_document(client: redis.Redis, tenant: str, model: str) -> dict[str, Any]:
    """The stored document, `{"model": {}, "aliases": {}}` when there is none (or it is unreadable)."""
    raw: Any = client.get(keys.serving_policy(tenant, model))
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    model_level = doc.get("model")
    aliases = doc.get("aliases")
    return {
        "model": model_level if isinstance(model_level, dict) else {},
        "aliases": {k: v for k, v in aliases.items() if isinstance(v, dict)} if isinstance(aliases, dict) else {},
    }


def write_level(client: redis.Redis, tenant: str, model: str, alias: str | None, values: dict[str, Any]) -> None:
    """Set (or, with a None value, clear) fields of the model's level or of one alias's; WATCHed against races."""
    key = keys.serving_policy(tenant, model)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                doc = read_document(pipe, tenant, model)
                level = doc["model"] if alias is None else doc["aliases"].setdefault(alias, {})
                for field, value in values.items():
                    if value is None:
                        level.pop(field, None)
                    else:
                        level[field] = value
                doc["aliases"] = {a: v for a, v in doc["aliases"].items() if v}
                pipe.multi()
                pipe.set(key, json.dumps(doc))
                pipe.execute()
                return
            except redis.WatchError:
                continue


def effective(doc: dict[str, Any], alias: str | None, defaults: Policy) -> Policy:
    """The policy a request on `alias` (None: by number or default) gets from `doc`."""
    merged = {**defaults.as_dict(), **doc.get("model", {})}
    if alias is not None:
        merged.update(doc.get("aliases", {}).get(alias, {}))
    return Policy(
        max_batch_size=int(merged["max_batch_size"]),
        max_queue_delay_ms=float(merged["max_queue_delay_ms"]),
        max_queued=int(merged["max_queued"]),
    )
