"""A job past MLQ_JOB_TIME_LIMIT_S ends `failed` with a reason, and its worker takes the next job."""

from __future__ import annotations

import pytest
from job_harness import error_of
from reliability_support import ChaosHarness, WorkerFleet, dump

from store.contract import TRAIN_QUEUE

pytestmark = pytest.mark.integration

MLP = {"hidden_layers": [16], "batch_size": 4, "early_stopping_patience": 0, "epochs": 1000}


def test_a_training_past_its_time_limit_fails_with_a_reason_and_frees_the_worker(
    harness: ChaosHarness, fleet: WorkerFleet
) -> None:
    # A 3 s hard limit: the soft limit (2 s) stops the training inside the task, which records why.
    worker = fleet.start([TRAIN_QUEUE], env={"MLQ_JOB_TIME_LIMIT_S": "3"})
    job = harness.wait(harness.train_job("bc-too-long", MLP), timeout_s=30)
    assert job["status"] == "failed", dump(job) + worker.log_tail()
    assert error_of(job)["type"] == "time_limit", dump(job) + worker.log_tail()
    assert "MLQ_JOB_TIME_LIMIT_S=3" in error_of(job)["message"]
    assert job["attempts"] == 1 and harness.versions("bc-too-long") == []
    assert not (harness.settings.checkpoints_dir / job["id"]).exists()
    after = harness.wait(harness.train_job("iris-in-time", algorithm="logistic_regression"))
    assert after["status"] == "succeeded", dump(after)
    assert worker.proc.poll() is None
