"""Job records in Redis: the source of truth for a job's status. Stdlib + redis-py only (the API imports it).

Layout: hash `mlq:job:{id}` (JSON fields stored as strings), per-tenant sorted set `mlq:t:{tenant}:jobs` (score =
created ms) for listing, set `mlq:jobs:running`, flag `mlq:job:{id}:cancel`, channel `mlq:job:{id}:events`
(every change is published there, so `wait()` wakes at once instead of polling). Status transitions are Lua
scripts (store/lua/*.lua, their replies: store/script_outcomes.py): queued → running → succeeded | failed |
cancelled, and only the first final status wins, whichever process gets there first. Counters for /metrics live
in two hashes so every process's observations add up. List cursors: store/job_cursor.py.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import redis
from redis.client import Pipeline

from store import job_scripts, keys
from store.contract import TRAIN_QUEUE
from store.ids import is_job_id, new_id
from store.job_cursor import InvalidCursor as InvalidCursor  # re-exported: the API catches it from here
from store.job_cursor import decode_cursor, encode_cursor
from store.job_events import job_log, tenant_channel, tenant_log
from store.job_scripts import JOB_LOG_MAXLEN, TENANT_LOG_MAXLEN
from store.job_states import FINAL_STATUSES, INITIAL_STATE, JobStatus, JobType
from store.liveness import WorkerLiveness
from store.lua_loader import LuaScript, outcome, run_pipeline
from store.records import JobRecord, PublicJob
from store.script_outcomes import AdmitOutcome, BeginOutcome, CancelOutcome, FinishOutcome
from training.errors import Cancelled, MLQError

RUNNING_SET = keys.RUNNING_JOBS
METRICS_JOBS = keys.METRICS_JOBS
METRICS_DURATION = keys.METRICS_DURATION
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
FINAL = tuple(s.value for s in FINAL_STATUSES)
# A request counted against a model's queue cap stops counting after this long even if no worker took it (one
# lost with its stream, e.g. a flushed Redis): a cap can never block a model for good.
QUEUED_STALE_MS = 60_000
_PUBLIC = ("id", "type", "status", "model", "created_at", "started_at", "finished_at", "attempts")


class JobConflict(MLQError):
    """Raised when a job's state forbids the request, e.g. cancelling a job that already ended."""

    code = "job_conflict"
    status = 409


def now_rfc3339() -> tuple[str, int]:
    """The current time as an RFC 3339 UTC string with milliseconds, and as epoch milliseconds."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z", int(now.timestamp() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json_or_none(raw: str) -> Any:
    return json.loads(raw) if raw else None


class JobStore:
    """Create, read, list and move job records through their statuses."""

    def __init__(self, client: redis.Redis, ttl_s: int = 7 * 24 * 3600) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self._finish = LuaScript(client, "finish")
        self._mark_running = LuaScript(client, "mark_running")
        self._cancel = LuaScript(client, "cancel")
        self._progress = LuaScript(client, "progress")
        self._admit = LuaScript(client, "admit")
        self._finish_reply = LuaScript(client, "finish_reply")

    @staticmethod
    def key(job_id: str) -> str:
        return keys.job(job_id)

    @staticmethod
    def channel(job_id: str) -> str:
        return keys.job_channel(job_id)

    def script_keys(self, job_id: str) -> list[str]:
        """KEYS[1..6] of every script that may end a job (store/lua/lib/finish.lua's `job` table), in order."""
        return [
            self.key(job_id),
            RUNNING_SET,
            METRICS_JOBS,
            METRICS_DURATION,
            keys.job_cancel(job_id),
            self.channel(job_id),
        ]

    def new_record(
        self, tenant: str, type: str, model: str | None, request: dict[str, Any], job_id: str | None = None
    ) -> dict[str, str | int]:
        """The hash of a new queued job, as create() writes it."""
        created_at, created_ms = now_rfc3339()
        return {
            "id": job_id or new_id("job"),
            "tenant": tenant,
            "type": type,
            "status": INITIAL_STATE.value,
            "model": model or "",
            "created_at": created_at,
            "created_ms": created_ms,
            "started_at": "",
            "started_ms": "",
            "finished_at": "",
            "attempts": 0,
            "worker": "",
            "progress": "",
            "result": "",
            "error": "",
            "request": json.dumps(request),
        }

    def create(
        self,
        tenant: str,
        type: str,
        model: str | None,
        request: dict[str, Any],
        job_id: str | None = None,
        pipe: Pipeline | None = None,
    ) -> JobRecord:
        """Write a queued job record. With `pipe`, the writes are only queued on it (the caller executes them,
        e.g. in the same MULTI as the message that enqueues the job: one round trip)."""
        record = self.new_record(tenant, type, model, request, job_id)
        job_id = str(record["id"])
        target = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        target.hset(self.key(job_id), mapping=record)  # type: ignore[arg-type]
        target.zadd(keys.tenant_jobs(tenant), {job_id: record["created_ms"]})
        target.hincrby(METRICS_JOBS, f"{type}:queued", 1)
        if type != "predict":  # the first event of the job's and the tenant's logs (the Lua `emit` writes the rest)
            target.xadd(
                job_log(job_id),
                {"event": "queued", "status": "queued", "progress": ""},
                maxlen=JOB_LOG_MAXLEN,
                approximate=True,
            )
            target.xadd(
                tenant_log(tenant),
                {
                    "job": job_id,
                    "event": "queued",
                    "type": type,
                    "model": model or "",
                    "status": "queued",
                    "progress": "",
                },
                maxlen=TENANT_LOG_MAXLEN,
                approximate=True,
            )
            target.publish(tenant_channel(tenant), job_id)
        if pipe is None:
            with target:
                target.execute()
        return self._decode({k: str(v) for k, v in record.items()})

    def create_and_enqueue_in(
        self,
        pipe: Pipeline,
        record: dict[str, str | int],
        stream: str,
        entry: dict[str, bytes],
        queue_cap: int = 0,
    ) -> JobRecord:
        """Queue on `pipe` ONE script that writes a new predict job's record (from new_record) and appends its
        request to the inference stream: atomic like create() + XADD in a MULTI, at a fraction of the cost, and
        a non-transactional pipeline may then carry the BLPOP that waits for the answer (api/predict.py).
        With `queue_cap` > 0 the script refuses (CreateOutcome.FULL, nothing written) when the model already has
        that many queued (store/lua/create_predict.lua)."""
        fields: list[Any] = [x for item in record.items() for x in item]
        ((field, body),) = entry.items()
        pipe.eval(
            job_scripts.CREATE_PREDICT,
            5,
            self.key(str(record["id"])),
            keys.tenant_jobs(str(record["tenant"])),
            METRICS_JOBS,
            stream,
            keys.queued_predictions(str(record["tenant"]), str(record["model"])),
            record["id"],
            record["created_ms"],
            field,
            body,
            queue_cap,
            QUEUED_STALE_MS,
            *fields,
        )
        return self._decode({k: str(v) for k, v in record.items()})

    def _decode(self, raw: dict[Any, Any]) -> JobRecord:
        rec = {_text(k): _text(v) for k, v in raw.items()}
        job: dict[str, Any] = {k: (rec.get(k) or None) for k in _PUBLIC}
        # Typed members (StrEnum: they compare, and serialise to JSON, as their words).
        job["status"], job["type"] = JobStatus(rec["status"]), JobType(rec["type"])
        job["attempts"] = int(rec.get("attempts") or 0)
        for field in ("progress", "result", "error", "request"):
            job[field] = _json_or_none(rec.get(field, ""))
        job["tenant"] = rec.get("tenant", "")
        job["worker"] = rec.get("worker") or None
        job["created_ms"] = int(rec.get("created_ms") or 0)
        return cast(JobRecord, job)  # the hash's fields, as new_record and the scripts of job_scripts write them

    def decode(self, raw: dict[Any, Any]) -> JobRecord:
        """The job from its record as HGETALL returned it (for callers that read it in their own pipeline)."""
        return self._decode(raw)

    def get(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        raw = self.redis.hgetall(self.key(job_id))
        job = self._decode(raw) if raw else None
        if (
            job is not None
            and job["status"] == "running"
            and job["type"] == "train"
            and not self.heartbeat_alive(job_id)
        ):
            job = self._awaiting_recovery(job)
        return job

    def _awaiting_recovery(self, job: JobRecord) -> JobRecord:
        """A running training whose worker stopped sending heartbeats (it died), as a reader should see it.

        Its record stays `running` until a live train worker's sweeper requeues it (store/leases.py); with no
        train worker alive that never happens, and a bare `running` would mislead. The record is not changed:
        the sweeper is what decides, this only says so in `progress.message`.
        """
        if WorkerLiveness(self.redis).counts().get(TRAIN_QUEUE, 0):
            why = "a train worker will resume it from its last checkpoint within seconds"
        else:
            why = "no train worker is alive to resume it: start one (mlq worker --queues train)"
        progress = dict(job["progress"] or {})
        progress["message"] = f"waiting for recovery: the worker running it stopped (no heartbeat); {why}"
        return {**job, "progress": progress}

    def get_for(self, tenant: str, job_id: str) -> JobRecord | None:
        job = self.get(job_id)
        return job if job is not None and job["tenant"] == tenant else None

    def list(
        self,
        tenant: str,
        status: str | None = None,
        type: str | None = None,
        model: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[builtins.list[JobRecord], str | None]:
        """Newest first; a page of at most `limit` jobs and the cursor of the next page (None on the last)."""
        index = keys.tenant_jobs(tenant)
        top: int | str = "+inf"
        after: tuple[int, str] | None = None
        if cursor:
            after = decode_cursor(cursor)
            top = after[0]
        found: builtins.list[JobRecord] = []
        expired: list[str] = []
        offset, batch = 0, max(limit + 1, 100)
        while len(found) <= limit:
            entries: list[tuple[Any, float]] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                index, top, "-inf", start=offset, num=batch, withscores=True
            )
            offset += len(entries)
            ids = [
                _text(member)
                for member, score in entries
                if after is None or int(score) < after[0] or _text(member) < after[1]
            ]
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self.key(job_id))
                records = pipe.execute()
            for job_id, raw in zip(ids, records, strict=True):
                if not raw:  # the record expired: drop it from the index (after the scan: offsets stay valid)
                    expired.append(job_id)
                    continue
                job = self._decode(raw)
                if (
                    (status and job["status"] != status)
                    or (type and job["type"] != type)
                    or (model and job["model"] != model)
                ):
                    continue
                found.append(job)
                if len(found) > limit:
                    break
            if len(entries) < batch:
                break
        if expired:
            self.redis.zrem(index, *expired)
        if len(found) > limit:
            last = found[limit - 1]
            return found[:limit], encode_cursor(last["created_ms"], last["id"])
        return found, None

    def mark_running(self, job_id: str, worker: str) -> bool:
        """Move a job to running (attempts += 1). False when it is final, unknown, or its cancel was requested."""
        now, now_ms = now_rfc3339()
        error = Cancelled("the job was cancelled before it started").to_json()
        reply = self._mark_running(
            keys=self.script_keys(job_id), args=[job_id, worker, now, now_ms, self.ttl_s, error, *DURATION_BUCKETS]
        )
        return self.started(reply)

    @staticmethod
    def started(reply: Any) -> bool:
        """Whether a mark_running reply (e.g. from a pipeline that ran mark_running_in) says: run the job."""
        return outcome(reply, BeginOutcome)[0] is BeginOutcome.STARTED

    def set_progress(self, job_id: str, progress: dict[str, Any], event: dict[str, Any] | None = None) -> None:
        """Record `progress` and announce it; the event carries `event` instead when given (smaller: a search's
        changed trial, not its table). Either way an event's progress is bounded (store/lua/lib/emit.lua)."""
        args = [json.dumps(progress)] + ([json.dumps(event)] if event is not None else [])
        self._progress(keys=[self.key(job_id), self.channel(job_id)], args=args)

    def finish(
        self, job_id: str, status: str, result: Mapping[str, Any] | None = None, error: dict[str, Any] | None = None
    ) -> bool:
        """Record the final status; True only for the first caller (a second finish changes nothing)."""
        status = JobStatus(status).value
        if status not in FINAL:
            raise ValueError(f"finish() takes a final status ({', '.join(FINAL)}), not {status!r}")
        now, now_ms = now_rfc3339()
        args: list[str | int | float] = [
            job_id,
            status,
            now,
            now_ms,
            self.ttl_s,
            json.dumps(result) if result is not None else "",
            json.dumps(error) if error is not None else "",
            *DURATION_BUCKETS,
        ]
        return outcome(self._finish(keys=self.script_keys(job_id), args=args), FinishOutcome)[0] is FinishOutcome.DONE

    def request_cancel(self, job_id: str) -> JobRecord:
        """Flag the job for cancellation; a queued job ends `cancelled` at once. JobConflict if already final."""
        now, now_ms = now_rfc3339()
        error = Cancelled("the job was cancelled before it started").to_json()
        result, _ = outcome(
            self._cancel(
                keys=self.script_keys(job_id), args=[job_id, now, now_ms, self.ttl_s, error, *DURATION_BUCKETS]
            ),
            CancelOutcome,
        )
        job = self.get(job_id)
        if result is CancelOutcome.GONE or job is None:
            raise KeyError(job_id)
        if result is CancelOutcome.ALREADY_FINAL:
            raise JobConflict(
                f"job {job_id} already ended with status {job['status']}; only a queued or running job can be cancelled"
            )
        return job

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(keys.job_cancel(job_id)))

    def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """The job once it is final, or as it is when `timeout_s` runs out. Blocks on the job's channel."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            # Subscribe before reading, so a finish between the read and the wait cannot be missed.
            pubsub.subscribe(self.channel(job_id))
            job = self.get(job_id)
            while job is not None and job["status"] not in FINAL:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if pubsub.get_message(timeout=left) is not None:
                    job = self.get(job_id)
            return job
        finally:
            pubsub.close()

    def heartbeat(self, job_id: str, worker: str, ttl_s: float) -> None:
        """Say that `worker` still runs the job; the key expires when the worker dies."""
        self.redis.set(keys.job_heartbeat(job_id), worker, px=max(1, int(ttl_s * 1000)))

    def heartbeat_alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(keys.job_heartbeat(job_id)))

    def admit(self, tenant: str, job_id: str, max_active: int) -> bool:
        """Claim one of the tenant's `max_active` slots for a job about to be created (atomic check-and-add).

        The slot is given back when the job reaches a final status (the finish script removes it) or with
        `release()` when the job is never created. Ids whose record expired or ended are pruned when the
        tenant looks full, so a lost record can never block a tenant for good.
        """
        key = keys.tenant_active(tenant)
        if self._try_admit(key, job_id, max_active):
            return True
        members = [_text(m) for m in self.redis.smembers(key)]
        with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.hget(self.key(member), "status")
            statuses = pipe.execute()
        gone = [m for m, s in zip(members, statuses, strict=True) if s is None or _text(s) in FINAL]
        if not gone:
            return False
        self.redis.srem(key, *gone)
        return self._try_admit(key, job_id, max_active)

    def _try_admit(self, key: str, job_id: str, max_active: int) -> bool:
        return outcome(self._admit(keys=[key], args=[job_id, max_active]), AdmitOutcome)[0] is AdmitOutcome.ADMITTED

    def release(self, tenant: str, job_id: str) -> None:
        """Give back the slot `admit()` claimed for a job that was not created after all."""
        self.redis.srem(keys.tenant_active(tenant), job_id)

    def active_count(self, tenant: str) -> int:
        return int(self.redis.scard(keys.tenant_active(tenant)))

    # ---- online inference: job records finished in batches, answers pushed to the waiting submitter --------
    @staticmethod
    def reply_key(job_id: str) -> str:
        return keys.job_reply(job_id)

    def run_pipeline(self, fill: Callable[[Pipeline], None]) -> builtins.list[Any]:
        """One round trip of what `fill` queues on a pipeline, e.g. with mark_running_in and finish_and_reply_in
        (their scripts go by EVALSHA alone; see store/lua_loader.run_pipeline: other commands must be safe to
        repeat). Returns the replies in order."""
        return run_pipeline(self.redis, fill, (self._mark_running, self._finish_reply))

    def mark_running_in(self, pipe: Pipeline, job_id: str, worker: str) -> None:
        """Queue `mark_running` on a pipeline of run_pipeline(); `started(reply)` says whether to run the job."""
        now, now_ms = now_rfc3339()
        error = Cancelled("the job was cancelled before it started").to_json()
        self._mark_running.queue(
            pipe,
            keys=self.script_keys(job_id),
            args=[job_id, worker, now, now_ms, self.ttl_s, error, *DURATION_BUCKETS],
        )

    def finish_and_reply_in(
        self,
        pipe: Pipeline,
        job_id: str,
        status: str,
        result: bytes | str | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Queue on a pipeline of run_pipeline(): finish the job (only the first final status wins, as in
        finish()) and push the record, as it then is, to the job's reply list. `result` is already JSON (encoded
        once, by the worker). Its reply parses as a FinishOutcome."""
        status = JobStatus(status).value
        if status not in FINAL:
            raise ValueError(f"finish_and_reply_in() takes a final status, not {status!r}")
        now, now_ms = now_rfc3339()
        args: list[str | int | float | bytes] = [
            job_id,
            status,
            now,
            now_ms,
            self.ttl_s,
            result if result is not None else "",
            json.dumps(error) if error is not None else "",
            *DURATION_BUCKETS,
        ]
        self._finish_reply.queue(pipe, keys=[*self.script_keys(job_id), self.reply_key(job_id)], args=args)

    def decode_reply(self, raw: str | bytes) -> JobRecord:
        """The job from a reply pushed by finish_and_reply_in (a flat [field, value, ...] JSON array)."""
        flat = json.loads(raw)
        return self._decode(dict(zip(flat[::2], flat[1::2], strict=True)))

    def running_ids(self) -> builtins.list[str]:
        return sorted(_text(m) for m in self.redis.smembers(RUNNING_SET))

    def metrics(self) -> tuple[dict[tuple[str, str], int], dict[str, dict[str, float]]]:
        """(jobs reaching each (type, status), per-type duration histogram fields) for the /metrics collector."""
        jobs = {}
        for field, value in self.redis.hgetall(METRICS_JOBS).items():
            jtype, _, status = _text(field).partition(":")
            jobs[(jtype, status)] = int(value)
        durations: dict[str, dict[str, float]] = {}
        for field, value in self.redis.hgetall(METRICS_DURATION).items():
            jtype, _, rest = _text(field).partition(":")
            durations.setdefault(jtype, {})[rest] = float(value)
        return jobs, durations

    @staticmethod
    def public(job: JobRecord) -> PublicJob:
        """The contract's job object: no tenant or request internals."""
        base = f"/v1/jobs/{job['id']}"
        return {
            "id": job["id"],
            "type": job["type"],
            "status": job["status"],
            "model": job["model"],
            "created_at": job["created_at"],
            "started_at": job["started_at"],
            "finished_at": job["finished_at"],
            "attempts": job["attempts"],
            "worker": job["worker"],
            "progress": job["progress"],
            "result": job["result"],
            "error": job["error"],
            "links": {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
        }
