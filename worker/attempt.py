"""One attempt at one leased job, for every job type: begin → heartbeat → cancel check → checkpoint → one ending.

The train, optimize and batch tasks (and any new leased job type) differ only in what their attempt does; how an
attempt starts, keeps its lease, stops and is recorded is written once, here, in `run_leased()`:

1. BEGIN (store/lua/begin.lua) fences the attempt with a token; a duplicate or late message stops here.
2. The body runs under a lease heartbeat (`JobHeartbeat`) and, for job types that keep one, a checkpoint folder
   copied to the artifact store (`CheckpointSync`). It asks `attempt.should_stop()` between units of work and raises
   `training.errors.Cancelled` when told to.
3. `decide()` turns how the body ended (a result or an exception, why it was stopped, what the registration claim
   saw) into ONE `Ending`, a pure function (tests/unit/test_attempt_ending.py).
4. Each ending has one action: SUCCEEDED, FAILED and CANCELLED are written by a fenced FINISH (`Attempt.record`);
   DRAINED puts the job back on its queue (PREEMPT + re-send); LOST and DECLINED record nothing: a newer attempt
   owns the job.

Adding a job type (e.g. a rollout that moves an alias's traffic step by step): subclass `LeasedJob`, set `job_id`,
implement `run(attempt)` (the work; return the job's result, a JSON-able mapping; call `attempt.should_stop()`
between steps and raise `Cancelled` when it says yes; a job that registers a version asks
`attempt.registration_claim(tenant, model)` first) and `resend()` (send its Celery message again, by task name, for a
drained attempt); set `checkpoints = True` if it keeps files in `attempt.checkpoint_dir` to resume from. Then
register it with `register_leased(app, YOUR_TASK, runtime, lambda payload, hostname: YourJob(runtime, payload))`,
and add the task to `store.contract.LEASED_TASKS` so that the sweeper re-sends it when its worker dies.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import redis
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded

from store.script_outcomes import BeginOutcome, ClaimOutcome, FinishOutcome
from training.errors import Cancelled, InternalError, MLQError, RegistrationDeclined, TimeLimit
from worker.checkpoint_sync import CheckpointSync, remove_checkpoint
from worker.train_hooks import CancelCheck, JobHeartbeat, RegistrationClaim, requeue_on_shutdown, retry_redis

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)
JobError = dict[str, Any]
# A duplicate message for a job that will never run again: its leftover checkpoint can go.
ENDED_BEFORE_BEGIN = frozenset({BeginOutcome.FINAL, BeginOutcome.CANCELLED, BeginOutcome.POISON})


class Ending(StrEnum):
    """How one attempt ended; decided once, by `decide()`."""

    SUCCEEDED = "succeeded"  # recorded: the job's result
    FAILED = "failed"  # recorded: the job's error
    CANCELLED = "cancelled"  # recorded: its cancel was requested
    DRAINED = "drained"  # its worker shuts down: back on the queue, checkpoint kept
    LOST = "lost"  # its lease is gone: a newer attempt owns the job; nothing recorded
    DECLINED = "declined"  # the registration claim was refused to a stale attempt; nothing recorded


@dataclass(frozen=True)
class Verdict:
    """An ending with what is recorded for it (a result for SUCCEEDED, an error for FAILED)."""

    ending: Ending
    result: Mapping[str, Any] | None = None
    error: JobError | None = None


class ClaimState(Protocol):
    """What `decide()` reads of a registration claim (worker/train_hooks.py RegistrationClaim)."""

    @property
    def existing(self) -> Mapping[str, Any] | None: ...

    @property
    def outcome(self) -> ClaimOutcome | None: ...


def caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling, is a `kind`."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def job_error(job_id: str, exc: BaseException, time_limit_s: float | None) -> JobError:
    """The job error for `exc`: the library's own errors as they are, anything else as internal."""
    # Celery raises the soft time limit from a signal handler, wherever the task is: inside a library that
    # wraps what it catches (`except Exception: raise TheirError(...) from exc`) it arrives as another error.
    if caused_by(exc, SoftTimeLimitExceeded):
        return TimeLimit(
            f"the job ran past its time limit (MLQ_JOB_TIME_LIMIT_S={time_limit_s}) and was stopped"
        ).to_dict()
    if isinstance(exc, MLQError):
        return exc.to_dict()
    log.exception("job %s failed with an unexpected error", job_id, exc_info=exc)
    return InternalError(f"the worker failed unexpectedly: {type(exc).__name__}: {exc}").to_dict()


def decide(
    exc: BaseException | None,
    stop_reason: str | None,
    claim: ClaimState | None,
    result: Mapping[str, Any] | None,
    error_of: Callable[[BaseException], JobError] | None = None,
) -> Verdict:
    """How an attempt ended, from what its body raised (None: it returned `result`).

    `stop_reason` is the cancel check's ("cancel", "drain", "lost" or None); `claim` is the attempt's registration
    claim, if it asked for one; `error_of(exc)` builds a FAILED ending's job error.
    """
    if exc is None:
        return Verdict(Ending.SUCCEEDED, result=result)
    if isinstance(exc, Cancelled):
        if stop_reason == "drain":
            return Verdict(Ending.DRAINED)
        if stop_reason == "lost":
            return Verdict(Ending.LOST)
        return Verdict(Ending.CANCELLED)
    if isinstance(exc, RegistrationDeclined) and claim is not None:
        if claim.existing is not None:
            # An earlier attempt registered the version but died before recording it: that is the result.
            return Verdict(Ending.SUCCEEDED, result=claim.existing)
        if claim.outcome is ClaimOutcome.CANCELLED:
            return Verdict(Ending.CANCELLED)
        return Verdict(Ending.DECLINED)
    return Verdict(Ending.FAILED, error=error_of(exc) if error_of is not None else None)


class Attempt:
    """One fenced attempt: its token, lease heartbeat, cancel check, checkpoint folder and registration claim."""

    def __init__(self, runtime: Runtime, job_id: str, token: int, hostname: str) -> None:
        self.runtime, self.job_id, self.token, self.hostname = runtime, job_id, token, hostname
        self.checkpoint_dir: Path = runtime.settings.checkpoints_dir / job_id
        self.heartbeat = JobHeartbeat(runtime.leases, job_id, token, hostname, runtime.settings.heartbeat_s)
        self.should_stop = CancelCheck(runtime.jobs, job_id, hostname=hostname, lost=self.heartbeat.lost)
        self.claim: RegistrationClaim | None = None

    def registration_claim(self, tenant: str, model: str) -> RegistrationClaim:
        """The `claim_registration` hook for a body that registers one version of `model`."""
        self.claim = RegistrationClaim(self.runtime, self.job_id, tenant, model, self.token)
        return self.claim

    def holds(self) -> bool:
        """Whether this attempt still holds the job (refreshing its lease)."""
        job_id = self.job_id
        return bool(
            retry_redis(
                lambda: self.runtime.leases.heartbeat(job_id, self.token, self.hostname), f"job {job_id}: lease check"
            )
        )

    def record(self, verdict: Verdict) -> None:
        """Write a recorded ending's final status, fenced: only if this attempt still holds the job."""
        job_id, token, status = self.job_id, self.token, verdict.ending.value
        try:
            # The job ends here (not in a dead process), so no later attempt will resume from the checkpoint.
            # Removed before the final status is written (whoever sees the job final sees it cleaned up), but only
            # while this attempt still holds the job: a newer attempt may be resuming from it.
            if self.holds():
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
                remove_checkpoint(self.runtime.store, job_id)
            outcome = retry_redis(
                lambda: self.runtime.leases.finish(job_id, token, status, result=verdict.result, error=verdict.error),
                f"job {job_id}: recording {status}",
            )
        except redis.RedisError:
            # Redis stayed away: the lease expires and a sweeper requeues the job; the registration claim makes
            # the next attempt finish with the version registered here instead of training a second one.
            log.exception("job %s: could not record %s; a later attempt will", job_id, status)
            return
        if outcome is FinishOutcome.FENCED:
            log.warning(
                "job %s: attempt %d ended %s but a newer attempt owns the job; not recorded", job_id, token, status
            )
        else:  # the job's real outcome, in place of Celery's "succeeded" (see register_tasks)
            error = verdict.error
            log.info("job %s ended %s%s", job_id, status, f" ({error['type']}: {error['message']})" if error else "")


class LeasedJob:
    """What one leased job type does in an attempt; `run_leased()` does the rest. Override `run` and `resend`."""

    job_id: str
    checkpoints = False  # whether attempts keep `attempt.checkpoint_dir`, copied to the artifact store
    kept = "it starts over"  # what a drained job's next attempt starts from, for the log

    def run(self, attempt: Attempt) -> Mapping[str, Any]:
        """The attempt's work; returns the job's result. Raises Cancelled when `attempt.should_stop()`."""
        raise NotImplementedError

    def resend(self) -> object:
        """Send the job's message again (a drained attempt: the job was put back to queued)."""
        raise NotImplementedError

    def on_begin(self, started: bool) -> None:
        """After BEGIN: an attempt started, or (`started` False) the job had already ended. Default: nothing."""

    def settle(self, attempt: Attempt, verdict: Verdict) -> Verdict:
        """Last step before a recorded ending is written; may change it (e.g. a failed publish). Default: as is."""
        return verdict

    def on_recorded(self, verdict: Verdict) -> None:
        """After a recorded ending was written (or tried). Default: nothing."""


def run_leased(runtime: Runtime, job: LeasedJob, hostname: str) -> Ending | None:
    """One delivery of a leased job: begin a fenced attempt, run `job.run`, act on its one ending.

    Returns the ending, or None when no attempt began (a duplicate or late message).
    """
    job_id = job.job_id
    token, why = retry_redis(lambda: runtime.leases.begin(job_id, hostname), f"job {job_id}: start", 30.0)
    if token is None:
        # A duplicate or late message (the job is final, or another live attempt holds it): nothing to do.
        log.info("job %s not started: %s", job_id, why)
        if why in ENDED_BEFORE_BEGIN:
            if job.checkpoints:
                shutil.rmtree(runtime.settings.checkpoints_dir / job_id, ignore_errors=True)
                remove_checkpoint(runtime.store, job_id)
            job.on_begin(started=False)  # e.g. a redelivery after a crash in a search's update
        return None
    job.on_begin(started=True)
    attempt = Attempt(runtime, job_id, token, hostname)
    result: Mapping[str, Any] | None = None
    failure: BaseException | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(attempt.heartbeat)
            if job.checkpoints:
                # Restored from the artifact store first, copied there as it changes: the next attempt may be
                # on another host.
                folder, every = attempt.checkpoint_dir, runtime.settings.heartbeat_s
                stack.enter_context(
                    CheckpointSync(runtime.store, job_id, folder, every, secret_key=runtime.settings.secret_key)
                )
            result = job.run(attempt)
    except Exception as exc:  # noqa: BLE001 - every exception is an ending (decide); none escapes to Celery
        failure = exc
    verdict = decide(
        failure,
        attempt.should_stop.reason,
        attempt.claim,
        result,
        lambda exc: runtime.error_for(job_id, exc),
    )
    ending = verdict.ending
    if ending is Ending.DRAINED:
        requeue_on_shutdown(runtime.leases, job_id, token, job.resend, job.kept)
    elif ending is Ending.LOST:
        log.warning("job %s: attempt %d stopped; a newer attempt owns the job", job_id, token)
    elif ending is Ending.DECLINED:
        log.warning("job %s: attempt %d lost the job before registering; nothing registered", job_id, token)
    else:
        if ending is Ending.CANCELLED:
            log.info("job %s cancelled; nothing kept", job_id)
        verdict = job.settle(attempt, verdict)
        attempt.record(verdict)
        job.on_recorded(verdict)
        ending = verdict.ending
    return ending


def register_leased(
    app: Celery,
    name: str,
    runtime: Runtime,
    job_for: Callable[[dict[str, Any], str], LeasedJob],
    fair: tuple[str, str] | None = None,
) -> None:
    """Register the Celery task `name`: each delivery of `payload` runs `job_for(payload, hostname)` as one attempt.

    With `fair` = (queue, job type) a delivery runs the job that is fairly next on that queue instead, which may be
    another tenant's (worker/fair_dispatch.py; its runner for each type is `leased_runner(runtime, job_for)`)."""

    @app.task(name=name, bind=True)  # type: ignore[untyped-decorator]  # celery has no type hints
    def leased(self: Task, payload: dict[str, Any]) -> None:
        hostname = self.request.hostname or "unknown"
        if fair is not None:
            runtime.run_fair(fair[0], fair[1], payload, hostname)
        else:
            run_leased(runtime, job_for(payload, hostname), hostname)


def leased_runner(
    runtime: Runtime, job_for: Callable[[dict[str, Any], str], LeasedJob]
) -> Callable[[dict[str, Any], str], None]:
    """What the fair dispatcher calls to run a picked job of one leased type: one attempt of it."""

    def run(payload: dict[str, Any], hostname: str) -> None:
        run_leased(runtime, job_for(payload, hostname), hostname)

    return run
