"""The worker's task `mlqueue.rollout`: move an alias to a candidate version step by step, guarded by live figures.

It is a leased job run by the one attempt runner (worker/attempt.py `run_leased`: a fenced attempt, a heartbeat,
the cancel check, one recorded ending; the sweeper re-sends it when its worker dies). Its progress is its
checkpoint: the step it reached is in the job record, so a new attempt re-applies that step's split and judges it
afresh. Every way out but success puts the alias back as it was before the rollout: a tripped guard, a cancel, a
candidate the workers cannot load. The alias lock (store/rollouts.py) is released with the recorded ending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery

from store import live_metrics, rollouts
from store.contract import ROLLOUT_TASK, TRAIN_QUEUE, JobType
from store.readiness import VersionNotReady
from store.rollouts import GuardTripped, RolloutRequest
from store.traffic import TrafficPolicy, move_traffic
from training.errors import Cancelled
from worker.attempt import Attempt, LeasedJob, Verdict, register_leased
from worker.train_hooks import CancelCheck, retry_redis

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often a step's figures are read (two HGETALLs) and the cancel flag checked


class Rollout:
    """One attempt at a rollout: apply each step, watch it, judge it."""

    def __init__(self, runtime: Runtime, request: RolloutRequest, check: CancelCheck) -> None:
        self.runtime, self.request, self.check = runtime, request, check
        self.redis = runtime.jobs.redis
        self.history: list[dict[str, Any]] = []

    def move(self, policy: TrafficPolicy) -> None:
        r = self.request
        move_traffic(
            self.redis, self.runtime.registry, r.tenant, r.model, r.alias, policy, self.runtime.settings.ready_timeout_s
        )

    def restore(self) -> None:
        """Put the alias back as it was before the rollout (its baseline is loaded: no wait in practice)."""
        self.move(TrafficPolicy.from_dict(self.request.previous))

    def totals(self) -> tuple[dict[str, float], dict[str, float]]:
        r = self.request
        return (
            live_metrics.read_total(self.redis, r.tenant, r.model, r.to),
            live_metrics.read_total(self.redis, r.tenant, r.model, r.baseline),
        )

    def report(self, index: int, percent: int, message: str, figures: dict[str, Any] | None = None) -> None:
        steps = self.request.steps
        progress: dict[str, Any] = {
            "fraction": round(index / len(steps), 4),
            "message": message,
            "step": index,
            "percent": percent,
            "steps": steps,
        }
        if figures:
            progress.update(figures)
        retry_redis(lambda: self.runtime.jobs.set_progress(self.request.job_id, progress), "rollout progress", 10.0)

    def run(self, start: int) -> dict[str, Any]:
        r = self.request
        for index in range(start, len(r.steps)):
            percent = r.steps[index]
            if self.check():
                raise Cancelled("the rollout was cancelled")
            try:
                self.move(rollouts.step_policy(r, percent))
            except VersionNotReady as exc:
                raise GuardTripped(
                    f"step {percent} %: the candidate could not be served: {exc.message}",
                    guard="ready",
                    step=percent,
                    figures={},
                ) from None
            self.report(index, percent, f"step {index + 1}/{len(r.steps)}: {percent} % on version {r.to}")
            if percent >= 100:
                break
            self.history.append(self.watch(index, percent))
        return {"alias": r.alias, "from": r.baseline, "to": r.to, "steps": self.history}

    def watch(self, index: int, percent: int) -> dict[str, Any]:
        """Judge one step from its own figures until `step_seconds` passed and the candidate answered
        `min_requests` in it; GuardTripped as soon as the guard breaks."""
        r = self.request
        before_c, before_b = self.totals()
        started = time.monotonic()
        min_requests = int(r.guard.get("min_requests", 0))
        while True:
            if self.check():
                raise Cancelled("the rollout was cancelled")
            time.sleep(POLL_S)
            after_c, after_b = self.totals()
            candidate = live_metrics.summary(live_metrics.minus(after_c, before_c))
            baseline = live_metrics.summary(live_metrics.minus(after_b, before_b))
            figures = {"candidate": _brief(candidate), "baseline": _brief(baseline)}
            if candidate["requests"] >= max(1, min_requests):
                tripped = rollouts.judge(r.guard, candidate)
                if tripped is not None:
                    guard, seen = tripped
                    raise GuardTripped(
                        f"step {percent} %: guard {guard} tripped ({seen}); alias {r.alias!r} is back on "
                        f"version {r.baseline}",
                        guard=guard,
                        step=percent,
                        figures=figures,
                    )
                if time.monotonic() - started >= r.step_seconds:
                    return {"percent": percent, **figures}
            self.report(index, percent, f"step {index + 1}/{len(r.steps)}: {percent} %, watching", figures)


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    shadow = summary.get("shadow") or {}
    return {
        "requests": summary["requests"],
        "errors": summary["errors"],
        "error_rate": round(summary["error_rate"], 6),
        "p99_ms": summary["latency_ms"]["p99"],
        "agreement": shadow.get("agreement"),
    }


class RolloutJob(LeasedJob):
    """A rollout as a leased job (worker/attempt.py): its progress is its checkpoint, every ending but success
    restores the alias, and the alias lock goes with the recorded ending."""

    kept = "it re-applies the step it reached"

    def __init__(self, runtime: Runtime, request: RolloutRequest) -> None:
        self.runtime, self.request, self.job_id = runtime, request, request.job_id
        self.rollout: Rollout | None = None

    def run(self, attempt: Attempt) -> Mapping[str, Any]:
        job: Any = self.runtime.jobs.get(self.job_id) or {}
        start = int((job.get("progress") or {}).get("step") or 0)  # a resumed attempt re-applies its step
        self.rollout = rollout = Rollout(self.runtime, self.request, attempt.should_stop)
        try:
            return rollout.run(start)
        except Cancelled:
            if attempt.should_stop.reason == "cancel":
                rollout.restore()  # drained or lost: the job goes on elsewhere, the alias stays where it is
            raise
        except Exception:
            # A tripped guard, or anything else: the alias must not stay half-moved.
            try:
                rollout.restore()
            except Exception:
                log.exception("rollout %s: could not restore alias %r", self.job_id, self.request.alias)
            raise

    def resend(self) -> None:
        app = self.runtime.app
        assert app is not None, "register_tasks() sets the app"
        # Into its tenant's fair queue first, like every job of the train queue (store/fair.py).
        self.runtime.fair.enqueue(TRAIN_QUEUE, self.request.tenant, self.job_id)
        app.send_task(ROLLOUT_TASK, args=[self.request.encode()], task_id=self.job_id, queue=TRAIN_QUEUE)

    def on_begin(self, started: bool) -> None:
        if not started:  # the job ended before this delivery (e.g. cancelled while queued): free its alias
            self.unlock()

    def on_recorded(self, verdict: Verdict) -> None:
        self.unlock()

    def unlock(self) -> None:
        r = self.request
        retry_redis(lambda: rollouts.unlock(self.runtime.jobs.redis, r.tenant, r.model, r.alias, r.job_id), "unlock")


def register_rollout(app: Celery, runtime: Runtime) -> None:
    """Register `mlqueue.rollout` on `app` (called by worker.tasks.register_tasks)."""
    register_leased(app, ROLLOUT_TASK, runtime, rollout_job(runtime), fair=(TRAIN_QUEUE, JobType.ROLLOUT.value))


def rollout_job(runtime: Runtime) -> Callable[[dict[str, Any], str], LeasedJob]:
    return lambda payload, _: RolloutJob(runtime, RolloutRequest.decode(payload))
