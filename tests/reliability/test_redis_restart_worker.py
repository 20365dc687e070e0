"""Redis dies mid-training and comes back: the workers recover on their own and every job ends.

A private redis-server with `appendonly yes` (production's setting, see docs/operations.md), killed with SIGKILL
and restarted on the same port. No worker is restarted by the test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from reliability_support import ChaosHarness, PrivateRedis, WorkerFleet, dump, running_at_epoch

from store.contract import TRAIN_QUEUE
from store.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MLP = {"hidden_layers": [16], "batch_size": 4, "early_stopping_patience": 0}


@pytest.fixture(scope="module")
def chaos_settings(private_redis_aof: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    yield Settings(
        redis_url=private_redis_aof.url,
        home=tmp_path_factory.mktemp("mlq-home"),
        heartbeat_s=0.5,
        stale_job_s=2.0,
        shutdown_grace_s=2.0,
    )


def test_a_redis_restart_mid_training_heals_without_restarting_the_worker(
    harness: ChaosHarness, fleet: WorkerFleet, private_redis_aof: PrivateRedis
) -> None:
    worker = fleet.start([TRAIN_QUEUE])
    job_id = harness.train_job("bc-redis-restart", {**MLP, "epochs": 150})
    harness.wait_for(job_id, running_at_epoch(5), what="the training running")
    private_redis_aof.stop(kill=True)
    # The scenario, not a wait for a condition: Redis stays away longer than the heartbeat lease (stale_job_s=2),
    # so every lease expires while it is down (nothing to poll: the server is stopped).
    time.sleep(3.0)
    private_redis_aof.start()

    job = harness.wait(job_id, timeout_s=120)
    assert job["status"] == "succeeded", dump(job) + worker.log_tail()
    assert len(harness.versions("bc-redis-restart")) == 1
    assert job["result"]["version"] == 1
    # The same worker (no restart by anyone) keeps serving.
    assert worker.proc.poll() is None
    after = harness.wait(harness.train_job("iris-after-restart", algorithm="logistic_regression"))
    assert after["status"] == "succeeded", dump(after) + worker.log_tail()
