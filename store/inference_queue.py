"""The online inference queue: one Redis Stream that the API writes and the inference workers read in batches.

Stdlib + redis + orjson only: the API imports it. The API writes the job record and the request in ONE
MULTI (`enqueue_in` beside `JobStore.create(..., pipe=)`), then blocks on the job's reply list (BLPOP, no polling)
where the worker pushes the finished record (`JobStore.finish_and_reply_in`). The consumer side, which batches
what is waiting into one forward pass per model version, is `worker/inference.py`.

Why a stream and not a Celery task per request: a Celery message costs the API ~1 ms of kombu work and the
worker one task dispatch per request, and celery-batches formed batches of 2-3 rows at 32 connections (see
docs/benchmarks.md). XREADGROUP COUNT n takes everything waiting in one call, the pending list gives
at-least-once delivery, and XCLAIM lets a live worker take over a dead one's entries.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import redis
from redis.client import Pipeline

from store import keys
from store.contract import BATCH_QUEUE, INFERENCE_QUEUE, TRAIN_QUEUE

STREAM = keys.INFERENCE_STREAM
STREAM_HIGH = keys.INFERENCE_STREAM_HIGH  # the high-priority lane (worker/batch_policy.py says how it is read)
STREAMS = (STREAM_HIGH, STREAM)  # the order a consumer reads them in
GROUP = "inference"
FIELD = "r"  # the entry's one field: the PredictRequest as JSON
# Counters every inference worker adds to: batches read, requests, rows, forward passes (rows per forward
# pass = the mean batch size), requests answered on their own because their batch had a bad row.
STATS = keys.INFERENCE_STATS
# The histogram of requests per batch, in the same hash: field "size:{bound}" counts the batches whose size is at
# most `bound` and above the bound before it (cumulated at scrape time, api/metrics.py).
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def batch_size_field(size: int) -> str:
    for bound in BATCH_SIZE_BUCKETS:
        if size <= bound:
            return f"size:{bound}"
    return "size:inf"


def stream_entry(request: dict[str, Any]) -> dict[str, bytes]:
    """The fields of the stream entry that carries a predict request."""
    try:
        body = orjson.dumps(request)
    except TypeError:  # orjson refuses integers beyond 64 bits; the worker then refuses the row by name
        body = json.dumps(request).encode()
    return {FIELD: body}


def enqueue_in(pipe: Pipeline, request: dict[str, Any]) -> None:
    """Queue the XADD of a predict request on `pipe` (the caller executes it with the job record)."""
    pipe.xadd(STREAM, stream_entry(request))  # type: ignore[arg-type]


def decode(raw: str | bytes) -> dict[str, Any]:
    """A request written by enqueue_in (orjson reads what it wrote; the stdlib what orjson could not write)."""
    try:
        return dict(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return dict(json.loads(raw))


def queued_requests(client: redis.Redis) -> list[dict[str, Any]]:
    """The requests in the stream not yet answered (read or not), oldest first: for tests and operators."""
    entries: Any = [e for stream in STREAMS for e in client.xrange(stream) or []]
    # Works with either kind of client: decoded (str keys) or raw (bytes keys).
    return [decode(fields.get(FIELD) or fields[FIELD.encode()]) for _, fields in entries]


def depth(client: redis.Redis) -> int:
    """Requests in the stream not yet answered (an answered request's entry is deleted)."""
    with client.pipeline(transaction=False) as pipe:
        for stream in STREAMS:
            pipe.xlen(stream)
        return sum(int(n) for n in pipe.execute())


def queue_depths(client: redis.Redis) -> dict[str, int]:
    """What waits in each queue: training messages in Celery's list, predictions in the stream."""
    return {
        TRAIN_QUEUE: int(client.llen(TRAIN_QUEUE)),
        INFERENCE_QUEUE: depth(client),
        BATCH_QUEUE: int(client.llen(BATCH_QUEUE)),
    }


def stats(client: redis.Redis) -> dict[str, int]:
    """The workers' batching counters (see STATS); 0 for what was never counted."""
    raw: Any = client.hgetall(STATS)
    out = {"batches": 0, "requests": 0, "rows": 0, "forward_passes": 0, "alone": 0, "expired": 0}
    for key, value in raw.items():
        out[key.decode() if isinstance(key, bytes) else key] = int(value)
    return out


def batch_size_histogram(counters: dict[str, int]) -> tuple[list[tuple[str, float]], float, float]:
    """(cumulative buckets, sum, count) of requests per batch from `stats()`, for a Prometheus histogram."""
    buckets, running = [], 0
    for bound in BATCH_SIZE_BUCKETS:
        running += counters.get(f"size:{bound}", 0)
        buckets.append((str(bound), float(running)))
    running += counters.get("size:inf", 0)
    buckets.append(("+Inf", float(running)))
    return buckets, float(counters["requests"]), float(running)
