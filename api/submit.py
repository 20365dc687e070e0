"""Creating a job: idempotency, the job record, the Celery message, and the 202/200 answer.

Idempotency-Key (per tenant, 24 h): the first request claims the key with SET NX and a placeholder; the same
key with the same body (fingerprint = sha256 of method, path and canonical JSON) replays the same job; with a
different body it is a 422; while the first request is still being handled, 409. A request refused as invalid
releases its claim, so the client can fix the body and retry with the same key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Response, request

from api.limits import check_rate_limit, too_many_active
from api.parsing import wait_seconds
from api.problems import IdempotencyKeyExpired, IdempotencyKeyInUse, IdempotencyKeyReused, Unavailable
from api.replies import job_reply
from api.schemas import JobHeaders
from api.services import services, tenant
from api.waits import wait_for_job
from store import keys, redis_url
from store.fair import QUEUE_TYPES, flow_of
from store.ids import new_id
from store.records import JobRecord
from training.errors import EnqueueFailed

log = logging.getLogger(__name__)
IDEMPOTENCY_TTL_S = 24 * 3600


def fingerprint() -> str:
    """sha256 of method, path and the body as canonical JSON (key order and spacing do not matter)."""
    canonical = json.dumps(request.get_json(silent=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{request.method}\n{request.path}\n{canonical}".encode()).hexdigest()


class IdempotencyClaim:
    """One request's Idempotency-Key (none: every method does nothing): claimed first, then either recorded with
    the job it created or released, so that a client may fix a refused body and retry with the same key."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.name = keys.idempotency(tenant(), hashlib.sha256(key.encode()).hexdigest()) if key else None

    def replay(self, wait: int | None) -> Response | None:
        """With the key already used for this body, the answer for its job; None to go on and create one (the key
        is then held as "in flight"). ApiError 422 for another body, 409 while the first request is handled."""
        if self.name is None:
            return None
        redis, print_ = services().redis, fingerprint()
        if redis.set(self.name, json.dumps({"fingerprint": print_, "job_id": None}), nx=True, ex=IDEMPOTENCY_TTL_S):
            return None
        raw = redis.get(self.name)
        stored = json.loads(raw) if raw else {"fingerprint": print_, "job_id": None}
        if stored["fingerprint"] != print_:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request body; use a new key for a new request",
                errors=[{"loc": ["header", "Idempotency-Key"], "msg": "reused with a different body"}],
            )
        if stored["job_id"] is None:
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is still being handled; retry in a moment",
                headers={"Retry-After": "1"},
            )
        job = services().jobs.get_for(tenant(), stored["job_id"])
        if job is None:
            raise IdempotencyKeyExpired("the job this Idempotency-Key created has expired; use a new key")
        return answer(job, wait)

    def record(self, job_id: str) -> None:
        """The key now stands for `job_id`: a retry replays it."""
        if self.name is not None:
            payload = json.dumps({"fingerprint": fingerprint(), "job_id": job_id})
            services().redis.set(self.name, payload, ex=IDEMPOTENCY_TTL_S)

    def release(self) -> None:
        """Give the key back (the request was refused or failed)."""
        if self.name is not None:
            services().redis.delete(self.name)


def submit(
    *,
    job_type: str,
    model: str,
    task_name: str,
    queue: str,
    headers: JobHeaders,
    wait: int | None,
    build: Callable[[str], tuple[dict[str, Any], dict[str, Any]]],
) -> Response:
    """Validate (via `build`), record and enqueue a job, then answer it.

    `build(job_id)` raises for invalid input, else returns (the Celery message, the request kept on the record).
    """
    svc = services()
    claim = IdempotencyClaim(headers.idempotency_key)
    replayed = claim.replay(wait)
    if replayed is not None:
        return replayed
    done = admitted = created = False
    job_id = new_id("job")
    try:
        check_rate_limit()
        message, record = build(job_id)
        admitted = svc.jobs.admit(tenant(), job_id, svc.settings.max_active_jobs)
        if not admitted:
            raise too_many_active()
        job = svc.jobs.create(tenant(), job_type, model, record, job_id=job_id)
        created = True
        _publish(task_name, message, job_id, queue)
        claim.record(job_id)
        _replicate(job_id)
        done = True
    finally:
        if not done:
            _undo(job_id, claim, admitted=admitted and not created)
    return answer(job, wait)


def _publish(task_name: str, message: dict[str, Any], job_id: str, queue: str) -> None:
    """Send the job's message; if that fails, the record just written is marked failed (never left queued).

    ignore_result: the API never reads Celery results (the job record is the truth), and touching the
    result backend while Redis is down blocks for ~19 s and then breaks the backend for the process's life.
    """
    svc = services()
    try:
        if queue in QUEUE_TYPES:  # the train and batch queues: the message runs whichever job is fairly next
            svc.fair.enqueue(queue, tenant(), job_id, flow_of(message))
        svc.celery.send_task(task_name, args=[message], task_id=job_id, queue=queue, ignore_result=True)
    except Exception as exc:
        log.error("could not enqueue job %s: %s: %s", job_id, type(exc).__name__, exc)
        try:
            svc.jobs.finish(
                job_id,
                "failed",
                error=EnqueueFailed("the queue (Redis) did not take the job; submit it again").to_dict(),
            )
        except Exception as finish_exc:  # noqa: BLE001 - Redis is down; the 503 below is the answer either way
            log.error("job %s stays queued without a message: %s", job_id, finish_exc)
        raise Unavailable() from None


def _replicate(job_id: str) -> None:
    """With Sentinel, answer 202 only once a replica has the job (WAIT 1): a failover then cannot lose it.

    A replica that does not confirm within MLQ_REDIS_WAIT_MS (it is down, or far behind) does not fail the request:
    the job is on the primary (and its AOF), only not yet safe from a failover; the log says so.
    """
    svc = services()
    if not (redis_url.is_sentinel(svc.settings.redis_url) and svc.settings.redis_wait_ms):
        return
    if redis_url.replicated(svc.redis, svc.settings.redis_wait_ms) < 1:
        log.warning("job %s: no replica confirmed it within %d ms", job_id, svc.settings.redis_wait_ms)


def _undo(job_id: str, claim: IdempotencyClaim, *, admitted: bool) -> None:
    """Give back what a refused or failed submission claimed: its active-job slot and its Idempotency-Key."""
    svc = services()
    try:
        if admitted:
            svc.jobs.release(tenant(), job_id)
        claim.release()
    except Exception as exc:  # noqa: BLE001 - Redis is down: the original error is what the client must see
        log.warning("could not release the claims of job %s: %s", job_id, exc)


def answer(job: JobRecord, wait: int | None) -> Response:
    """200 with the job when it ended within the requested wait, else 202 + Location + Retry-After."""
    seconds, from_prefer = wait_seconds(wait)
    job = wait_for_job(job, seconds)
    return job_reply(services().jobs.public(job), created=True, waited_s=seconds, from_prefer=from_prefer)
