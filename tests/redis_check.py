"""One rule for every test that needs the shared Redis: skip locally when none answers, fail under CI=true."""

from __future__ import annotations

import os

import pytest
import redis


def require_redis(url: str) -> redis.Redis:
    """A client for `url`, after checking that it answers (a broken CI setup must never pass by skipping)."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a Redis at {url}: {exc}")
        pytest.skip(f"no Redis at {url}")
    return client
