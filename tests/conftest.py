"""Shared fixtures: a real Redis, flushed before and after each test that asks for it.

Locally a test that needs Redis is skipped when none answers; under CI=true it fails instead, so a broken CI
setup can never pass by skipping (the convention of dramatiq's and rq's suites).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from redis_check import require_redis

# Tests use their own database so they never touch data on db 0.
TEST_REDIS_URL = os.environ.get("MLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = require_redis(TEST_REDIS_URL)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()
