"""Chaos fixtures: a private redis-server that tests may stop and restart, and real worker subprocesses on it.

The helpers live in reliability_support.py (importable by the tests; conftest modules are not).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reliability_support import ChaosHarness, PrivateRedis, WorkerFleet, run_private_redis

from store.settings import Settings


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A throw-away redis-server (no persistence) for this module; stop()/start() at will."""
    yield from run_private_redis(tmp_path_factory.mktemp("redis"), appendonly=False)


@pytest.fixture(scope="module")
def private_redis_aof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """Like `private_redis`, but with `appendonly yes` (fsync always): a kill -9 and restart keeps every key."""
    yield from run_private_redis(tmp_path_factory.mktemp("redis-aof"), appendonly=True)


@pytest.fixture(scope="module")
def chaos_settings(private_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of this module's workers: the private Redis and a fresh MLQ_HOME."""
    return Settings(
        redis_url=private_redis.url,
        home=tmp_path_factory.mktemp("mlq-home"),
        heartbeat_s=0.5,
        stale_job_s=2.0,
        shutdown_grace_s=2.0,
    )


@pytest.fixture(scope="module")
def fleet(chaos_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFleet]:
    """Start and kill workers at will; every worker still running is stopped when the module ends."""
    f = WorkerFleet(chaos_settings, tmp_path_factory.mktemp("worker-logs"))
    yield f
    f.close()


@pytest.fixture(scope="module")
def harness(chaos_settings: Settings) -> Iterator[ChaosHarness]:
    h = ChaosHarness(chaos_settings)
    yield h
    h.close()
