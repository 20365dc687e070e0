"""A training job outlives its worker: attempt leases, the stale-job sweeper, warm-shutdown drains, one registration.

Celery on Redis only notices a dead worker when the visibility timeout (hours) runs out, so mlqueue keeps its own
lease on every running training, in the job record it already owns (stdlib + redis only; no torch, no Celery):

- **Attempt token.** `begin()` moves a job to running and returns its new attempt number (the job's `attempts`
  field) as a fence: heartbeats, the registration claim and the final status of an attempt are accepted only while
  the job is still running *that* attempt, so an old attempt (a worker thought dead, or a message redelivered hours
  later) can never overwrite what a newer one did. `begin()` also writes the first heartbeat in the same script,
  so two deliveries of one message can never both start it.
- **Heartbeat.** `mlq:job:{id}:heartbeat` (value `worker:attempt`) lives `stale_job_s` and is refreshed every
  `heartbeat_s` by the running attempt.
- **Sweeper.** A thread in every train-worker process looks every `stale_job_s / 2` for running trainings whose
  heartbeat expired. One script decides, atomically (only one sweeper wins): cancelled → `cancelled`; attempts used
  up → `failed` (`worker_lost`); past the job time limit → `failed` (`time_limit`); otherwise back to `queued`, and
  the sweeper re-sends `mlqueue.train` by name with the job's own request. The next attempt resumes from the
  checkpoint in `MLQ_HOME/checkpoints/{job}`.
- **Drain.** On SIGTERM the worker's main process writes `mlq:drain:{hostname}` (deadline = now +
  `shutdown_grace_s`); the training's stop check reads it, and past the deadline the attempt stops at the next
  batch and puts itself back on the queue (`preempt()`), which does not count as a failed attempt.
- **One registration.** Right before registering, an attempt claims `mlq:job:{id}:registered` (Lua: only while its
  lease holds, and not once the job is cancelled). A later attempt that finds the claim taken finds the version in
  the registry by the manifest's job id and finishes with it, instead of registering a second one.

The scripts are store/lua/{begin,heartbeat,finish_fenced,sweep,preempt,unrequeue,claim}.lua; their outcomes are
the enums of store/script_outcomes.py.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from store import keys
from store.jobs import DURATION_BUCKETS, JobStore, now_rfc3339
from store.lua_loader import LuaScript, outcome
from store.records import JobRecord
from store.redis_url import client as connect
from store.script_outcomes import (
    BeginOutcome,
    ClaimOutcome,
    FinishOutcome,
    HeartbeatOutcome,
    PreemptOutcome,
    SweepOutcome,
    UnrequeueOutcome,
)
from training.errors import Cancelled, TimeLimit, WorkerLost

log = logging.getLogger(__name__)


def heartbeat_key(job_id: str) -> str:
    return keys.job_heartbeat(job_id)


def claim_key(job_id: str) -> str:
    return keys.job_registered(job_id)


def drain_key(hostname: str) -> str:
    return keys.drain(hostname)


def poison_message(max_attempts: int) -> str:
    return (
        f"the job was started {max_attempts} times and its worker died (or was lost) each time "
        f"(MLQ_MAX_ATTEMPTS={max_attempts}); it may need more memory, smaller parameters or a smaller dataset"
    )


class Leases:
    """The fenced transitions of a training's attempts; every method is one Lua script (atomic)."""

    def __init__(self, jobs: JobStore, stale_s: float, max_attempts: int, time_limit_s: float = 0) -> None:
        if len(jobs.script_keys("job_x")) != 6:  # the lease scripts put the heartbeat at KEYS[7]
            raise RuntimeError("JobStore.script_keys() changed; update the KEYS of store/lua/*.lua")
        self.jobs = jobs
        self.redis = jobs.redis
        self.stale_s = stale_s
        self.max_attempts = max_attempts
        self.time_limit_s = time_limit_s
        self._begin = LuaScript(self.redis, "begin")
        self._heartbeat = LuaScript(self.redis, "heartbeat")
        self._finish = LuaScript(self.redis, "finish_fenced")
        self._sweep = LuaScript(self.redis, "sweep")
        self._preempt = LuaScript(self.redis, "preempt")
        self._unrequeue = LuaScript(self.redis, "unrequeue")
        self._claim = LuaScript(self.redis, "claim")

    def _keys(self, job_id: str) -> list[str]:
        return [*self.jobs.script_keys(job_id), heartbeat_key(job_id)]

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.stale_s * 1000))

    def begin(self, job_id: str, worker: str) -> tuple[int | None, BeginOutcome]:
        """Start an attempt: (its token, STARTED), or (None, why not: FINAL, CANCELLED, RUNNING_ELSEWHERE, ...)."""
        now, now_ms = now_rfc3339()
        reply = self._begin(
            keys=self._keys(job_id),
            args=[
                job_id,
                worker,
                now,
                now_ms,
                self.jobs.ttl_s,
                Cancelled("the job was cancelled before it started").to_json(),
                self._ttl_ms,
                self.max_attempts,
                WorkerLost(poison_message(self.max_attempts)).to_json(),
                *DURATION_BUCKETS,
            ],
        )
        result, data = outcome(reply, BeginOutcome)
        return (int(data[0]) if result is BeginOutcome.STARTED else None), result

    def heartbeat(self, job_id: str, token: int, worker: str) -> bool:
        """Refresh the lease; False once this attempt no longer holds the job."""
        reply = self._heartbeat(
            keys=[self.jobs.key(job_id), heartbeat_key(job_id)], args=[token, f"{worker}:{token}", self._ttl_ms]
        )
        return outcome(reply, HeartbeatOutcome)[0] is HeartbeatOutcome.REFRESHED

    def finish(
        self,
        job_id: str,
        token: int,
        status: str,
        result: Mapping[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> FinishOutcome:
        """Record the final status if this attempt still holds the job (DONE); else ALREADY_FINAL, FENCED, GONE."""
        now, now_ms = now_rfc3339()
        reply = self._finish(
            keys=self._keys(job_id),
            args=[
                job_id,
                status,
                now,
                now_ms,
                self.jobs.ttl_s,
                json.dumps(result) if result is not None else "",
                json.dumps(error) if error is not None else "",
                token,
                *DURATION_BUCKETS,
            ],
        )
        return outcome(reply, FinishOutcome)[0]

    def preempt(self, job_id: str, token: int) -> PreemptOutcome:
        """Put the job back on the queue from its running attempt (a drain): REQUEUED (send it again),
        CANCELLED (its cancel was requested: it ended), FENCED (the attempt no longer holds it)."""
        now, now_ms = now_rfc3339()
        reply = self._preempt(
            keys=self._keys(job_id), args=[job_id, token, now, now_ms, self.jobs.ttl_s, *DURATION_BUCKETS]
        )
        return outcome(reply, PreemptOutcome)[0]

    def sweep_one(self, job_id: str) -> SweepOutcome:
        """Decide about one running job whose heartbeat may have expired; REQUEUED means: send it again."""
        now, now_ms = now_rfc3339()
        limit_ms = int(self.time_limit_s * 1000)
        reply = self._sweep(
            keys=self._keys(job_id),
            args=[
                job_id,
                now,
                now_ms,
                self.jobs.ttl_s,
                Cancelled("the job was cancelled; its worker was lost before it could stop").to_json(),
                self.max_attempts,
                WorkerLost(poison_message(self.max_attempts)).to_json(),
                limit_ms,
                TimeLimit(
                    f"the job ran past its time limit (MLQ_JOB_TIME_LIMIT_S={self.time_limit_s:g}) "
                    "and its worker was stopped"
                ).to_json(),
                *DURATION_BUCKETS,
            ],
        )
        return outcome(reply, SweepOutcome)[0]

    def unrequeue(self, job_id: str, attempts: int) -> bool:
        reply = self._unrequeue(keys=[self.jobs.key(job_id), self.jobs.script_keys(job_id)[1]], args=[job_id, attempts])
        return outcome(reply, UnrequeueOutcome)[0] is UnrequeueOutcome.RESTORED

    def claim_registration(self, job_id: str, token: int, takeover_from: str = "") -> tuple[ClaimOutcome, str]:
        """(CLAIMED, ""), (FENCED, ""), (CANCELLED, ""), or (HELD, the attempt that holds the claim)."""
        reply = self._claim(
            keys=[self.jobs.key(job_id), claim_key(job_id), keys.job_cancel(job_id)],
            args=[token, self.jobs.ttl_s, takeover_from],
        )
        result, data = outcome(reply, ClaimOutcome)
        holder = data[0] if data else ""
        return result, holder.decode() if isinstance(holder, bytes) else str(holder)

    def train_payload(self, job: JobRecord) -> dict[str, Any]:
        """The encoded TrainRequest of a job record (the API keeps the request minus job_id and tenant)."""
        return {**(job.get("request") or {}), "job_id": job["id"], "tenant": job["tenant"]}


def parse_drain(raw: Any) -> float | None:
    """A drain record → its deadline, when it was written by this process's worker (its pid or its parent's)."""
    if not raw:
        return None
    try:
        record = json.loads(raw)
        if int(record["pid"]) not in (os.getpid(), os.getppid()):
            return None  # left behind by an earlier worker of the same name
        return float(record["deadline"])
    except (ValueError, KeyError, TypeError):
        return None


def request_drain(redis_url: str, hostname: str, grace_s: float) -> None:
    """Called in the worker's main process on SIGTERM: trainings get `grace_s` more, then checkpoint and requeue.

    A short-lived client: the main process forks the pool and must not keep a connection.
    """
    client = connect(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        record = json.dumps({"deadline": time.time() + max(0.0, grace_s), "pid": os.getpid()})
        client.set(drain_key(hostname), record, ex=int(max(grace_s, 0) + 3600))
    finally:
        client.close()


class Sweeper:
    """Every `interval_s`, put running trainings whose heartbeat expired back on the queue (or end them)."""

    def __init__(
        self,
        leases: Leases,
        send: Callable[[dict[str, Any]], None],
        interval_s: float,
        on_ended: Callable[[str], None] | None = None,
    ) -> None:
        self.leases = leases
        self.send = send
        self.on_ended = on_ended  # told the id of every job a sweep ended (a search's trial ends its search)
        self.interval_s = max(0.1, interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlq-sweeper", daemon=True)
        # After Redis was unreachable, give live holders time to refresh their heartbeats before judging them.
        self._quiet_until = time.monotonic() + leases.stale_s
        self.min_redis_uptime_s = leases.stale_s

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except redis.RedisError as exc:
                self._quiet_until = time.monotonic() + self.leases.stale_s
                log.warning("stale-job sweep failed (Redis): %s", exc)
            except Exception:  # never let the thread die: the next sweep may work
                log.exception("stale-job sweep failed")

    def sweep(self) -> list[tuple[str, SweepOutcome]]:
        """One pass; returns (job id, outcome) for every job it acted on."""
        if time.monotonic() < self._quiet_until:
            return []
        # A Redis that just restarted expired every heartbeat while it was down: wait for the holders to come back.
        uptime = int(self.leases.redis.info("server").get("uptime_in_seconds", 1 << 30))
        if uptime < self.min_redis_uptime_s:
            return []
        acted: list[tuple[str, SweepOutcome]] = []
        for job_id in self.leases.jobs.running_ids():
            if self.leases.jobs.heartbeat_alive(job_id):
                continue
            result = self.leases.sweep_one(job_id)
            if result in (SweepOutcome.ALIVE, SweepOutcome.NOT_RUNNING, SweepOutcome.NOT_LEASED):
                continue
            acted.append((job_id, result))
            if result is not SweepOutcome.REQUEUED:
                log.warning("job %s: its worker was lost; the job ended (%s)", job_id, result)
                if self.on_ended is not None:
                    self.on_ended(job_id)
                continue
            job = self.leases.jobs.get(job_id)
            if job is None:
                continue
            try:
                self.send(self.leases.train_payload(job))
            except Exception:
                log.exception("job %s: could not re-send it; a later sweep retries", job_id)
                self.leases.unrequeue(job_id, int(job["attempts"]))
                raise
            log.warning(
                "job %s: its worker was lost during attempt %d; requeued (it resumes from its checkpoint)",
                job_id,
                job["attempts"],
            )
        return acted
