"""Shared fixtures: a real Redis of this test session's own, flushed before and after each test that asks for it.

Each test session starts a private `redis-server` on a free port (two test runs on one machine must never flush
each other's data) and points MLQ_TEST_REDIS_URL at it before any test module reads it. A URL set by the caller
wins. Locally a test that needs Redis is skipped when none can be had; under CI=true it fails instead, so a broken
CI setup can never pass by skipping (the convention of dramatiq's and rq's suites).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import redis
from failure_report import PHASE_REPORTS
from private_redis import PrivateRedis
from redis_check import require_redis
from s3_server import RcloneS3

_session_redis: PrivateRedis | None = None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, for tests/failure_report.py's call_failed."""
    report: pytest.TestReport = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


def pytest_configure(config: pytest.Config) -> None:
    global _session_redis
    if os.environ.get("MLQ_TEST_REDIS_URL") or shutil.which("redis-server") is None:
        return  # the caller chose a Redis, or none can be started (require_redis then skips or fails)
    directory = Path(tempfile.mkdtemp(prefix="mlq-test-redis-"))
    _session_redis = PrivateRedis(directory, db=15)
    _session_redis.start()
    os.environ["MLQ_TEST_REDIS_URL"] = _session_redis.url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_redis is not None:
        _session_redis.stop(kill=False)
        shutil.rmtree(_session_redis.directory, ignore_errors=True)


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = os.environ.get("MLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    client = require_redis(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    """A real S3 server (rclone serve s3) for the session; tests take a fresh bucket each with `.bucket()`."""
    server = RcloneS3(tmp_path_factory.mktemp("s3-data"))
    server.start()
    yield server
    server.stop()
