"""A job that kills its worker every time it runs ends `failed` after MLQ_MAX_ATTEMPTS, with a readable reason."""

from __future__ import annotations

import pytest
from job_harness import error_of
from reliability_support import ChaosHarness, WorkerFleet, dump

from store.contract import TRAIN_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MLP = {"hidden_layers": [16], "batch_size": 4, "early_stopping_patience": 0, "epochs": 1000}


def test_a_job_whose_worker_dies_every_time_fails_after_max_attempts(harness: ChaosHarness, fleet: WorkerFleet) -> None:
    job_id = harness.train_job("bc-poison", MLP)
    for attempt in (1, 2, 3):  # MLQ_MAX_ATTEMPTS=3 in the chaos workers' environment
        worker = fleet.start([TRAIN_QUEUE])
        harness.wait_for(
            job_id,
            lambda j, a=attempt: j["status"] == "running" and j["attempts"] == a,  # type: ignore[misc]
            what=f"attempt {attempt} running",
        )
        fleet.kill(worker)  # e.g. the kernel's OOM killer, every time the job runs
    survivor = fleet.start([TRAIN_QUEUE])
    job = harness.wait(job_id, timeout_s=30)
    assert (job["status"], job["attempts"]) == ("failed", 3), dump(job)
    assert error_of(job)["type"] == "worker_lost"
    assert "3 times" in error_of(job)["message"] and "MLQ_MAX_ATTEMPTS" in error_of(job)["message"]
    assert harness.versions("bc-poison") == []
    # Not looping: the worker is free for the next job, and the poison job never runs again.
    after = harness.wait(harness.train_job("iris-after-poison", algorithm="logistic_regression"))
    assert after["status"] == "succeeded", dump(after) + survivor.log_tail()
    assert harness.jobs.get(job_id)["attempts"] == 3  # type: ignore[index]
