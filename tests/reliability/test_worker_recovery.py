"""A worker that dies or is stopped mid-training loses nothing: the job resumes elsewhere and registers once.

Real `celery worker` subprocesses on a private Redis; the tests kill them the way machines and orchestrators do
(SIGKILL to the whole process group, SIGTERM to the main process).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from typing import Any

import pytest
from job_harness import present
from reliability_support import ChaosHarness, WorkerFleet, dump, epoch_of, running_at_epoch

from store.contract import TRAIN_QUEUE
from training.manifest import ModelManifest

pytestmark = pytest.mark.integration

# ~40 ms an epoch on one CPU thread: a few seconds of training, checkpointed every epoch.
LONG = {"epochs": 120, "hidden_layers": [16], "batch_size": 4, "early_stopping_patience": 0}


def registered_by(harness: ChaosHarness, model: str, job_id: str) -> list[ModelManifest]:
    return [m for m in harness.versions(model) if m.get("job_id") == job_id]


def queue_drained(harness: ChaosHarness, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while harness.redis.llen(TRAIN_QUEUE) > 0:
        assert time.monotonic() < deadline, "the train queue did not drain"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_sigkilled_worker_s_training_resumes_from_its_checkpoint_on_another_worker(
    harness: ChaosHarness, fleet: WorkerFleet
) -> None:
    first = fleet.start([TRAIN_QUEUE])
    job_id = harness.train_job("bc-killed", LONG)
    job = harness.wait_for(job_id, running_at_epoch(8), what="epoch 8 on the first worker")
    fleet.kill(first)  # the machine loses power: main process and pool child, no goodbye
    killed_at = epoch_of(harness.jobs.get(job_id) or {})
    assert present(harness.jobs.get(job_id))["status"] == "running"

    second = fleet.start([TRAIN_QUEUE])
    ready = time.monotonic()
    # The second worker's sweeper notices the dead heartbeat and requeues the job within seconds (not after the
    # 12 h visibility timeout); it then resumes from the checkpoint, not from epoch 1.
    seen: list[int] = []
    while True:
        current: Mapping[str, Any] = harness.jobs.get(job_id) or {}
        if current.get("attempts") == 2 and current["status"] == "running" and current.get("progress"):
            seen.append(epoch_of(current))
        if current.get("status") in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() - ready < 60, dump(current)
        time.sleep(0.01)
    job = harness.wait(job_id)
    assert job["status"] == "succeeded", dump(job) + second.log_tail()
    assert job["attempts"] == 2
    assert str(job["worker"]).startswith(second.name + "@")
    assert seen and min(seen) >= killed_at, (killed_at, seen[:5])
    assert job["result"]["epochs_run"] == LONG["epochs"] and job["result"]["version"] == 1
    assert len(registered_by(harness, "bc-killed", job_id)) == 1 and len(harness.versions("bc-killed")) == 1
    assert int(harness.redis.hget(harness.jobs.key(job_id), "requeues") or 0) == 1
    assert not (harness.settings.checkpoints_dir / job_id).exists()


def test_a_duplicate_message_is_skipped_while_the_job_runs_and_after_it_ended(
    harness: ChaosHarness, fleet: WorkerFleet
) -> None:
    while len([w for w in fleet.started if w.proc.poll() is None]) < 2:
        fleet.start([TRAIN_QUEUE])
    job_id = harness.train_job("bc-duplicate", {**LONG, "epochs": 40})
    harness.wait_for(job_id, running_at_epoch(2), what="the first delivery running")
    harness.send(harness.request_of(job_id))  # e.g. Celery's own redelivery of an unacked message
    queue_drained(harness)  # the idle worker took the duplicate
    job = harness.wait(job_id)
    assert job["status"] == "succeeded", dump(job)
    assert job["attempts"] == 1
    # Hours later, the dead worker's unacked message comes back: the job is final, nothing runs.
    harness.send(harness.request_of(job_id))
    queue_drained(harness)
    # An observation window, not a wait for a condition: nothing may change once the duplicate was taken. (kombu's
    # unacked hash is no signal here: it still holds the message of the worker the first test SIGKILLed.)
    time.sleep(1.0)
    again = harness.jobs.get(job_id)
    assert again is not None and (again["status"], again["attempts"], again["finished_at"]) == (
        "succeeded",
        1,
        job["finished_at"],
    ), dump(again)
    assert len(harness.versions("bc-duplicate")) == 1


def _only_one_train_worker(fleet: WorkerFleet) -> Any:
    alive = [w for w in fleet.started if w.proc.poll() is None]
    for extra in alive[1:]:
        fleet.stop(extra)
    return alive[0] if alive else fleet.start([TRAIN_QUEUE])


def test_sigterm_lets_a_short_training_finish_within_the_grace_period(
    harness: ChaosHarness, fleet: WorkerFleet
) -> None:
    worker = _only_one_train_worker(fleet)
    job_id = harness.train_job("bc-graceful", {**LONG, "epochs": 15})
    harness.wait_for(job_id, running_at_epoch(1), what="the training running")
    worker.proc.send_signal(signal.SIGTERM)  # docker stop / kubectl delete pod: SIGTERM to PID 1
    assert worker.proc.wait(timeout=30) == 0, worker.log_tail()
    job = harness.wait(job_id, timeout_s=5)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), dump(job)
    assert len(harness.versions("bc-graceful")) == 1


def test_sigterm_stops_a_long_training_after_the_grace_period_and_the_next_worker_finishes_it(
    harness: ChaosHarness, fleet: WorkerFleet
) -> None:
    worker = _only_one_train_worker(fleet)
    job_id = harness.train_job("bc-preempted", {**LONG, "epochs": 200})
    harness.wait_for(job_id, running_at_epoch(3), what="the training running")
    signalled = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0, worker.log_tail()
    # MLQ_SHUTDOWN_GRACE_S=2: stopped at the next batch after 2 s, requeued, and the worker exited.
    assert time.monotonic() - signalled < 2 + 10, worker.log_tail()
    job = harness.jobs.get(job_id)
    assert job is not None and job["status"] == "queued", dump(job)
    assert harness.redis.hget(harness.jobs.key(job_id), "preempted") == "1"
    stopped_at = epoch_of(job)
    assert (harness.settings.checkpoints_dir / job_id / "last.pt").exists()  # kept for the next attempt
    assert harness.redis.llen(TRAIN_QUEUE) == 1  # re-sent by name, not waiting for a visibility timeout

    nxt = fleet.start([TRAIN_QUEUE])
    resumed = harness.wait_for(
        job_id, lambda j: j["attempts"] == 2 and j["status"] == "running" and epoch_of(j) > 0, what="the second attempt"
    )
    assert epoch_of(resumed) >= stopped_at, dump(resumed)
    job = harness.wait(job_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 2), dump(job) + nxt.log_tail()
    assert str(job["worker"]).startswith(nxt.name + "@")
    assert len(harness.versions("bc-preempted")) == 1
