"""The worker's task `mlqueue.rollout`: move an alias to a candidate version step by step, guarded by live figures.

It runs under the same attempt lease as a training (store/leases.py: a heartbeat, the cancel check, the sweeper
re-sends it when its worker dies), built like worker/optimize_task.py. Its progress is its checkpoint: the step it
reached is in the job record, so a new attempt re-applies that step's split and judges it afresh. Every way out
but success puts the alias back as it was before the rollout: a tripped guard, a cancel, a candidate the workers
cannot load. The alias lock (store/rollouts.py) is released at the end, whatever the end.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from celery import Celery, Task

from store import live_metrics, rollouts
from store.contract import ROLLOUT_TASK, TRAIN_QUEUE
from store.readiness import VersionNotReady
from store.rollouts import GuardTripped, RolloutRequest
from store.traffic import TrafficPolicy, move_traffic
from training.errors import Cancelled
from worker.train_hooks import CancelCheck, JobHeartbeat, requeue_on_shutdown, retry_redis

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


def run_rollout(runtime: Runtime, payload: dict[str, Any], hostname: str) -> None:
    request = RolloutRequest.decode(payload)
    job_id = request.job_id
    token, why = retry_redis(lambda: runtime.leases.begin(job_id, hostname), f"job {job_id}: start", 30.0)
    if token is None:
        log.info("rollout %s not started: %s", job_id, why)
        return
    heartbeat = JobHeartbeat(runtime.leases, job_id, token, hostname, runtime.settings.heartbeat_s)
    check = CancelCheck(runtime.jobs, job_id, hostname=hostname, lost=heartbeat.lost, interval_s=POLL_S)
    job: Any = runtime.jobs.get(job_id) or {}
    start = int((job.get("progress") or {}).get("step") or 0)  # a resumed attempt re-applies the step it reached
    rollout = Rollout(runtime, request, check)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        with heartbeat:
            result = rollout.run(start)
        status = "succeeded"
    except Cancelled:
        if check.reason == "lost":
            log.warning("rollout %s: attempt %d stopped; a newer attempt owns it", job_id, token)
            return
        if check.reason == "drain":
            requeue_on_shutdown(
                runtime.leases, job_id, token, lambda: send(runtime, request), "it re-applies its current step"
            )
            return
        rollout.restore()
        status = "cancelled"
    except Exception as exc:
        # A tripped guard, or anything else: the alias must not stay half-moved.
        try:
            rollout.restore()
        except Exception:
            log.exception("rollout %s: could not restore alias %r", job_id, request.alias)
        status, error = "failed", runtime.error_for(job_id, exc)
    try:
        runtime.conclude(job_id, token, hostname, status, result, error)
    finally:
        rollouts.unlock(runtime.jobs.redis, request.tenant, request.model, request.alias, job_id)


def send(runtime: Runtime, request: RolloutRequest) -> None:
    app = getattr(runtime, "app", None)
    assert app is not None, "register_tasks() sets the app"
    app.send_task(ROLLOUT_TASK, args=[request.encode()], task_id=request.job_id, queue=TRAIN_QUEUE)


def register_rollout(app: Celery, runtime: Runtime) -> None:
    """Register `mlqueue.rollout` on `app` (called by worker.tasks.register_tasks)."""

    @app.task(name=ROLLOUT_TASK, bind=True)  # type: ignore[untyped-decorator]  # celery has no type hints
    def rollout(self: Task, payload: dict[str, Any]) -> None:
        run_rollout(runtime, payload, self.request.hostname or "unknown")
