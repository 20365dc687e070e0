"""How a leased attempt ended: `worker.attempt.decide()` as a table, then `run_leased()` on a real Redis with a
job type of the test's own (a stepper, like a rollout: no training, no Celery worker)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from store.leases import request_drain
from store.script_outcomes import ClaimOutcome, PreemptOutcome
from store.settings import Settings
from training.errors import Cancelled, InvalidParams, RegistrationDeclined
from worker.attempt import Attempt, Ending, LeasedJob, Verdict, decide, run_leased
from worker.tasks import WorkerRuntime
from worker.train_hooks import CANCEL_CHECK_INTERVAL_S


@dataclass
class Claim:
    existing: Mapping[str, Any] | None = None
    outcome: ClaimOutcome | None = None


def error_of(exc: BaseException) -> dict[str, Any]:
    return {"type": "boom", "message": str(exc)}


RECOVERED = {"model": "m", "version": 3, "recovered": True}


@pytest.mark.parametrize(
    ("exc", "reason", "claim", "expected"),
    [
        (None, None, None, Verdict(Ending.SUCCEEDED, result={"r": 1})),
        (None, "cancel", None, Verdict(Ending.SUCCEEDED, result={"r": 1})),  # finished before it looked
        (Cancelled("stop"), "cancel", None, Verdict(Ending.CANCELLED)),
        (Cancelled("stop"), "drain", None, Verdict(Ending.DRAINED)),
        (Cancelled("stop"), "lost", None, Verdict(Ending.LOST)),
        (Cancelled("stop"), None, None, Verdict(Ending.CANCELLED)),  # the body's own cancel
        (RegistrationDeclined("held"), None, Claim(existing=RECOVERED), Verdict(Ending.SUCCEEDED, result=RECOVERED)),
        (RegistrationDeclined("no"), None, Claim(outcome=ClaimOutcome.CANCELLED), Verdict(Ending.CANCELLED)),
        (RegistrationDeclined("no"), None, Claim(outcome=ClaimOutcome.FENCED), Verdict(Ending.DECLINED)),
        (
            RegistrationDeclined("no claim asked"),
            None,
            None,
            Verdict(Ending.FAILED, error={"type": "boom", "message": "no claim asked"}),
        ),
        (ValueError("bad"), None, None, Verdict(Ending.FAILED, error={"type": "boom", "message": "bad"})),
        (ValueError("bad"), "cancel", None, Verdict(Ending.FAILED, error={"type": "boom", "message": "bad"})),
    ],
)
def test_one_ending_per_way_an_attempt_can_end(
    exc: BaseException | None, reason: str | None, claim: Claim | None, expected: Verdict
) -> None:
    assert decide(exc, reason, claim, {"r": 1} if exc is None else None, error_of) == expected


class Stepper(LeasedJob):
    """A job type with no training: `steps` steps, each checking whether to stop first."""

    def __init__(self, job_id: str, steps: int, before_step: Any = None, fail_at: int | None = None) -> None:
        self.job_id, self.steps, self.before_step, self.fail_at = job_id, steps, before_step, fail_at
        self.resent = 0
        self.done = 0

    def run(self, attempt: Attempt) -> Mapping[str, Any]:
        for step in range(self.steps):
            if self.before_step is not None:
                self.before_step(step, attempt)
            time.sleep(CANCEL_CHECK_INTERVAL_S * 1.2)  # the cancel check asks Redis at most this often
            if attempt.should_stop():
                raise Cancelled("stopped")
            if step == self.fail_at:
                raise InvalidParams(f"step {step}: weight must be <= 100")
            self.done += 1
        return {"steps": self.done}

    def resend(self) -> None:
        self.resent += 1


@pytest.fixture
def runtime(redis_url: str, tmp_path: Path) -> WorkerRuntime:
    return WorkerRuntime(Settings(redis_url=redis_url, home=tmp_path, heartbeat_s=0.2, stale_job_s=5))


def new_job(rt: WorkerRuntime) -> str:
    return str(rt.jobs.create("default", "train", None, {})["id"])


def test_a_new_job_type_runs_its_body_and_the_runner_records_the_result(runtime: WorkerRuntime) -> None:
    job_id = new_job(runtime)
    assert run_leased(runtime, Stepper(job_id, 3), "w1") is Ending.SUCCEEDED
    job = runtime.jobs.get(job_id)
    assert job is not None and job["status"] == "succeeded" and job["result"] == {"steps": 3}
    assert job["attempts"] == 1
    # A duplicate delivery of a final job starts no attempt.
    assert run_leased(runtime, Stepper(job_id, 3), "w1") is None


def test_a_body_s_error_fails_the_job_with_its_code(runtime: WorkerRuntime) -> None:
    job_id = new_job(runtime)
    assert run_leased(runtime, Stepper(job_id, 3, fail_at=1), "w1") is Ending.FAILED
    job = runtime.jobs.get(job_id)
    assert job is not None and job["status"] == "failed"
    assert job["error"] is not None and job["error"]["type"] == "invalid_params"


def test_a_cancel_requested_mid_run_ends_it_cancelled(runtime: WorkerRuntime) -> None:
    job_id = new_job(runtime)
    job = Stepper(job_id, 5, before_step=lambda step, _: step == 2 and runtime.jobs.request_cancel(job_id))
    assert run_leased(runtime, job, "w1") is Ending.CANCELLED
    record = runtime.jobs.get(job_id)
    assert record is not None and record["status"] == "cancelled" and job.done == 2


def test_a_drained_attempt_goes_back_to_queued_and_is_resent(runtime: WorkerRuntime, redis_url: str) -> None:
    job_id = new_job(runtime)

    def shutting_down(step: int, _: Attempt) -> None:
        if step == 1:  # SIGTERM with no grace left
            request_drain(redis_url, "w1", 0)

    job = Stepper(job_id, 5, before_step=shutting_down)
    assert run_leased(runtime, job, "w1") is Ending.DRAINED
    record = runtime.jobs.get(job_id)
    assert record is not None and record["status"] == "queued" and job.resent == 1


def test_an_attempt_whose_lease_was_taken_records_nothing(runtime: WorkerRuntime) -> None:
    job_id = new_job(runtime)

    def requeued_and_retaken(step: int, attempt: Attempt) -> None:
        if step == 1:  # as if this worker had been taken for dead: requeued, and another worker's attempt began
            assert runtime.leases.preempt(job_id, attempt.token) is PreemptOutcome.REQUEUED
            token, _ = runtime.leases.begin(job_id, "w2")
            assert token is not None

    job = Stepper(job_id, 200, before_step=requeued_and_retaken)
    assert run_leased(runtime, job, "w1") is Ending.LOST
    record = runtime.jobs.get(job_id)
    assert record is not None and record["status"] == "running" and record["worker"] == "w2"
