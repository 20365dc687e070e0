"""Readiness per version: no request is the first to wait for a model to load after an alias change.

Before an alias change (or a rollout step) sends traffic to a version, the API asks the inference workers to load
it (a sorted set of warm requests that each consumer reads every couple of seconds), then waits until every live
inference worker holds it: each consumer writes its name into the version's readiness hash once loaded (or the
error that kept it from loading, which ends the wait at once), and every worker's liveness record lists what it
holds, refreshed every MLQ_HEARTBEAT_S. The liveness records, not the stream group, say who is alive: Redis 7.0's
XINFO CONSUMERS does not count a blocked read as activity. With no live inference worker there is nothing to warm
and nothing waits. Stdlib + redis only: the API uses it.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.client import Pipeline

from store import keys
from store.contract import INFERENCE_QUEUE
from store.liveness import WorkerLiveness
from training.errors import MLQError

WARM_KEEP_S = 600  # a warm request older than this is dropped: a worker started later loads on first use
READY_TTL_S = 7 * 86400
ERROR_PREFIX = "error:"


class VersionNotReady(MLQError):
    """Raised when the inference workers did not load a version in time (or could not load it at all)."""

    code = "version_not_ready"
    status = 503


def member(tenant: str, model: str, version: int) -> str:
    return f"{tenant}/{model}/{version}"


def request_warm(client: redis.Redis, tenant: str, model: str, version: int) -> None:
    # Errors of an earlier try are forgotten: the version may load now (more memory, a fixed file).
    client.delete(keys.ready(tenant, model, version))
    client.zadd(keys.WARM_REQUESTS, {member(tenant, model, version): time.time()})


def warm_requests(client: redis.Redis) -> list[tuple[str, str, int]]:
    """What the workers were asked to load lately: (tenant, model, version) each."""
    cutoff = time.time() - WARM_KEEP_S
    with client.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(keys.WARM_REQUESTS, "-inf", cutoff)
        pipe.zrange(keys.WARM_REQUESTS, 0, -1)
        _, raw = pipe.execute()
    out = []
    for item in raw:
        text = item.decode() if isinstance(item, bytes) else item
        tenant, model, version = text.rsplit("/", 2)
        out.append((tenant, model, int(version)))
    return out


def mark_in(pipe: Pipeline, tenant: str, model: str, version: int, consumer: str, error: str | None = None) -> None:
    """Queue on `pipe`: `consumer` holds the version (or could not load it: `error`)."""
    key = keys.ready(tenant, model, version)
    pipe.hset(key, consumer, f"{ERROR_PREFIX}{error}" if error else str(time.time()))
    pipe.expire(key, READY_TTL_S)


def status(client: redis.Redis, tenant: str, model: str, version: int) -> tuple[list[str], list[str], list[str]]:
    """(live inference workers holding the version, those not yet, load errors reported) for one version."""
    held = f"{tenant}/{model}:{version}"  # how a worker's liveness record lists what it holds (ModelCache.describe)
    ready: list[str] = []
    waiting: list[str] = []
    for record in WorkerLiveness(client).workers():
        if INFERENCE_QUEUE in record.get("queues", []):
            who = f"{record.get('hostname')}:{record.get('pid')}"
            (ready if held in record.get("models", []) else waiting).append(who)
    raw: Any = client.hgetall(keys.ready(tenant, model, version))
    errors = [
        f"{_text(k)}: {_text(v)[len(ERROR_PREFIX) :]}" for k, v in raw.items() if _text(v).startswith(ERROR_PREFIX)
    ]
    return ready, waiting, errors


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_ready(
    client: redis.Redis, tenant: str, model: str, versions: list[int], timeout_s: float, poll_s: float = 0.1
) -> None:
    """Ask every live inference consumer to load `versions` and return once all have; VersionNotReady past
    `timeout_s` or as soon as one reports it could not load a version."""
    for version in versions:
        request_warm(client, tenant, model, version)
    deadline = time.monotonic() + timeout_s
    while True:
        missing = []
        for version in versions:
            _, waiting, errors = status(client, tenant, model, version)
            if errors:
                raise VersionNotReady(
                    f"version {version} of {model!r} could not be loaded by the inference workers: {errors[0]}",
                    errors=[{"loc": ["version", version], "msg": errors[0]}],
                )
            missing += [f"v{version} on {c}" for c in waiting]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise VersionNotReady(
                f"the inference workers did not load {', '.join(missing[:5])} within {timeout_s:.0f} s "
                "(MLQ_READY_TIMEOUT_S); traffic was not moved. Check the workers' logs and memory, then try again"
            )
        time.sleep(poll_s)
