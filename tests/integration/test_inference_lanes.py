"""How the inference consumer forms batches from the two priority lanes and per-model batch policies: a real
consumer (not started: the test calls its read() itself) on real Redis streams; no worker process reads them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from store import serving
from store.contract import PredictRequest
from store.ids import new_id
from store.inference_queue import STREAM, STREAM_HIGH, stream_entry
from store.jobs import JobStore
from store.settings import Settings
from worker.batch_policy import chunks
from worker.inference import InferenceConsumer, Item

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mlq_settings: Settings) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def consumer(client: redis.Redis, max_size: int, passover_ms: float, delay_ms: float = 0.0) -> InferenceConsumer:
    c = InferenceConsumer(
        client,
        JobStore(client),
        cast(Any, None),  # read() never loads a model
        "lanes-test",
        max_size=max_size,
        max_delay_ms=delay_ms,
        max_attempts=3,
        error_for=lambda job_id, exc: {"type": "x", "message": str(exc)},
        max_passover_ms=passover_ms,
    )
    c.ensure_group()
    return c


def put(client: redis.Redis, stream: str, model: str = "m", rows: int = 1) -> str:
    job_id = new_id("job")
    client.xadd(stream, stream_entry(PredictRequest(job_id, "t", model, 1, [[0.0]] * rows).encode()))  # type: ignore[arg-type]
    return job_id


def ids(items: list[Item]) -> list[str]:
    return [it.job_id or "" for it in items]


def test_high_requests_go_first_and_normal_ones_wait_their_turn(client: redis.Redis) -> None:
    lanes = consumer(client, max_size=2, passover_ms=60_000)
    normal = [put(client, STREAM) for _ in range(3)]
    high = [put(client, STREAM_HIGH) for _ in range(3)]
    assert ids(lanes.read()) == high[:2]  # normal ones read with them are carried, not served
    assert ids(lanes.read()) == [high[2], normal[0]]
    assert ids(lanes.read()) == normal[1:]
    assert lanes.read() == []  # nothing left (it returns after its one-second block)


def test_normal_work_passed_over_longer_than_the_bound_goes_first(client: redis.Redis) -> None:
    lanes = consumer(client, max_size=2, passover_ms=50)
    normal = [put(client, STREAM) for _ in range(2)]
    high = [put(client, STREAM_HIGH) for _ in range(2)]
    assert ids(lanes.read()) == high
    more_high = [put(client, STREAM_HIGH) for _ in range(2)]
    time.sleep(0.1)  # the carried normal requests are now overdue
    batch = ids(lanes.read())
    assert batch[:2] == normal and set(batch[2:]) <= set(more_high)


def test_a_models_batch_size_splits_its_forward_passes_and_never_a_request(client: redis.Redis) -> None:
    serving.write_level(client, "t", "small", None, {"max_batch_size": 2, "max_queue_delay_ms": 500})
    lanes = consumer(client, max_size=64, passover_ms=100, delay_ms=500)
    small = [put(client, STREAM, "small") for _ in range(3)]
    batch = lanes.read()
    assert ids(batch) == small
    assert lanes.policies.get(batch[0].request) == serving.Policy(2, 500.0, 0)
    assert lanes.policies.largest() == 64
    assert [ids(c) for c in chunks(batch, 2)] == [small[:2], small[2:]]  # forward passes of at most 2 rows
    big = put(client, STREAM, "small", rows=5)
    assert [ids(c) for c in chunks(lanes.read(), 2)] == [[big]]  # a request is never split
