"""Cancellation follows the contract in every state, with real workers: queued (even with no worker online),
running (stops within one batch, no version), racing completion (exactly one final state) and already final."""

from __future__ import annotations

import time

import pytest
from job_harness import progress_of
from reliability_support import ChaosHarness, WorkerFleet, dump, running_at_epoch

from store.contract import TRAIN_QUEUE
from store.jobs import JobConflict

pytestmark = pytest.mark.integration

MLP = {"hidden_layers": [16], "batch_size": 4, "early_stopping_patience": 0}


def test_a_job_cancelled_while_no_worker_is_online_never_starts(harness: ChaosHarness, fleet: WorkerFleet) -> None:
    assert not [w for w in fleet.started if w.proc.poll() is None]
    job_id = harness.train_job("bc-never", {**MLP, "epochs": 5})  # record + message, nobody consumes yet
    assert harness.jobs.request_cancel(job_id)["status"] == "cancelled"
    fleet.start([TRAIN_QUEUE])
    # One worker process takes one message at a time, in order: once the next job ends, the first was seen.
    after = harness.wait(harness.train_job("bc-after", {**MLP, "epochs": 2}))
    assert after["status"] == "succeeded", dump(after)
    job = harness.jobs.get(job_id)
    assert job is not None
    assert (job["status"], job["attempts"], job["started_at"]) == ("cancelled", 0, None), dump(job)
    assert harness.versions("bc-never") == []


def test_cancelling_a_running_training_stops_it_within_a_batch_with_no_version(
    harness: ChaosHarness, fleet: WorkerFleet
) -> None:
    job_id = harness.train_job("bc-cancel-running", {**MLP, "epochs": 500})
    harness.wait_for(job_id, running_at_epoch(2), what="the training running")
    asked = time.monotonic()
    harness.jobs.request_cancel(job_id)
    job = harness.wait(job_id, timeout_s=10)
    assert job["status"] == "cancelled", dump(job)
    assert time.monotonic() - asked < 2.0
    assert progress_of(job)["epoch"] < 500 and job["attempts"] == 1
    assert harness.versions("bc-cancel-running") == []
    assert not (harness.settings.checkpoints_dir / job_id).exists()
    with pytest.raises(JobConflict):  # already final: the API answers 409
        harness.jobs.request_cancel(job_id)
    assert harness.jobs.get(job_id)["status"] == "cancelled"  # type: ignore[index]


def test_cancelling_a_finished_job_is_a_conflict_and_changes_nothing(harness: ChaosHarness, fleet: WorkerFleet) -> None:
    job = harness.wait(harness.train_job("bc-done", {**MLP, "epochs": 2}))
    assert job["status"] == "succeeded", dump(job)
    with pytest.raises(JobConflict):
        harness.jobs.request_cancel(job["id"])
    again = harness.jobs.get(job["id"])
    assert again is not None and (again["status"], again["result"]) == ("succeeded", job["result"])


def test_a_cancel_racing_the_end_of_training_gives_exactly_one_final_state(
    harness: ChaosHarness, fleet: WorkerFleet
) -> None:
    outcomes = []
    for i, delay in enumerate((0.0, 0.15, 0.3, 0.45, 0.6, 0.9)):
        model = f"bc-race-{i}"
        job_id = harness.train_job(model, {**MLP, "epochs": 10})  # ~0.5 s of training
        harness.wait_for(job_id, lambda j: j["status"] != "queued", what="the job started")
        time.sleep(delay)  # the scenario: the cancel lands at a different point of each short training
        try:
            harness.jobs.request_cancel(job_id)
            accepted = True
        except JobConflict:
            accepted = False  # it had already ended: the API's 409
        job = harness.wait(job_id)
        versions = harness.versions(model)
        if job["status"] == "succeeded":
            assert len(versions) == 1 and versions[0]["job_id"] == job_id, dump(job)
            assert job["result"]["version"] == 1
        else:
            assert job["status"] == "cancelled" and accepted, dump(job)
            assert versions == [], dump(versions)
        # The final state never changes afterwards (an observation window, not a wait for a condition).
        time.sleep(0.1)
        assert harness.jobs.get(job_id)["status"] == job["status"]  # type: ignore[index]
        outcomes.append(job["status"])
    assert set(outcomes) <= {"succeeded", "cancelled"}
