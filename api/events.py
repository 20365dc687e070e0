"""Live events as Server-Sent Events: GET /v1/jobs/{id}/events (one job) and GET /v1/events (all of a tenant's jobs).

Each event is `id: <stream id>`, `event: status | progress`, `data: <JSON>`, read from the job's or the tenant's
event log (store/job_events.py), so a client that reconnects with `Last-Event-ID` (browsers' EventSource do it by
themselves) gets every event it missed, the final status included. A job's stream starts with the job as it is
(`event: status`), sends every change after it, and ends after the final status, whose data is the whole job with
its result or error. A comment line every HEARTBEAT_S keeps proxies from closing an idle stream and finds clients
that left. Streams count against the wait caps (api/waits.py): past them, 429 with Retry-After.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field

from api.hub import Waiter
from api.problems import InvalidEventId, TooManyWaits
from api.schemas import JobPath, Parameters, Problem
from api.services import Services, services, tenant
from api.waits import DISCONNECT_CHECK_S, RECHECK_S, client_gone, client_socket
from store.job_events import JobEvent, job_log, last_id, read_after, tenant_channel, tenant_log, valid_event_id
from store.jobs import FINAL
from store.records import JobRecord
from training.errors import ResourceNotFound

HEARTBEAT_S = 15.0
RETRY_MS = 2000  # how soon an EventSource reconnects after a drop
STREAM_RETRY_AFTER_S = "5"
READ_BATCH = 200
DONE, MORE, IDLE = "done", "more", "idle"  # what a stream's read() found: the end, a backlog, nothing more yet
SSE = {"text/event-stream": {"schema": {"type": "string", "description": "Server-Sent Events; see docs/api.md"}}}

bp = APIBlueprint(
    "events",
    __name__,
    url_prefix="/v1",
    abp_tags=[Tag(name="jobs")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 429: Problem, 503: Problem},
)


class EventsQuery(Parameters):
    last_event_id: str | None = Field(
        None, max_length=64, description="resume after this event id (as the Last-Event-ID header)"
    )


class EventsHeaders(Parameters):
    last_event_id: str | None = Field(
        None,
        alias="Last-Event-ID",
        max_length=64,
        description="resume after this event id; sent by EventSource on reconnect",
    )


def sse(event_id: str | None, event: str, data: dict[str, Any]) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def _resume_from(header: EventsHeaders, query: EventsQuery) -> str | None:
    """The id to resume after; 400 for a malformed one (checked before the stream starts: a stream that failed
    after `retry:` made EventSource reconnect with the same bad id forever)."""
    loc, value = (["header", "Last-Event-ID"], header.last_event_id)
    if not (value or "").strip():
        loc, value = ["query", "last_event_id"], query.last_event_id
    try:
        return valid_event_id(value)
    except ValueError as exc:
        raise InvalidEventId(
            f"{'/'.join(loc[1:])} {value!r} is not an event id: {exc}; send the `id:` of an event you received, or "
            "none to start from now",
            errors=[{"loc": loc, "msg": str(exc)}],
        ) from None


def _stream(body: Iterator[bytes], svc: Services, owner: str) -> Response:
    """The streaming response; its wait slot is given back when the server closes it (client gone or stream over).

    The body runs after the view returned, outside the request context: it gets what it needs as arguments.
    """
    if not svc.waits.acquire(owner, "stream"):
        raise TooManyWaits(
            f"too many waits and event streams open (at most {svc.waits.max_per_tenant} per tenant "
            f"and {svc.waits.max_total} per API process: MLQ_MAX_WAITS_PER_TENANT, MLQ_MAX_WAITS); close "
            "some, or poll",
            headers={"Retry-After": STREAM_RETRY_AFTER_S},
        )
    response = Response(
        body, mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    response.call_on_close(lambda: svc.waits.release(owner, "stream"))
    return response


def _change(job: JobRecord, ev: JobEvent) -> dict[str, Any]:
    return {
        "id": job["id"],
        "type": job["type"],
        "model": job["model"],
        "status": ev.status,
        "event": ev.event,
        "progress": ev.progress,
    }


def _final(svc: Services, job: JobRecord) -> dict[str, Any]:
    return {**svc.jobs.public(job), "event": job["status"]}


def job_events(svc: Services, job_id: str, after: str | None, sock: socket.socket | None) -> Iterator[bytes]:
    log = job_log(job_id)
    yield f"retry: {RETRY_MS}\n\n".encode()
    with svc.hub.listen(svc.jobs.channel(job_id)) as waiter:
        # Read the record and the log's newest id together: every event after that id is news to this client.
        with svc.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(svc.jobs.key(job_id))
            pipe.xrevrange(log, count=1)
            raw, newest = pipe.execute()
        if not raw:
            return
        job = svc.jobs.decode(raw)
        if after is None:
            after = newest[0][0] if newest else "0-0"
            if job["status"] in FINAL:
                yield sse(after, "status", _final(svc, job))
                return
            yield sse(after, "status", {**svc.jobs.public(job), "event": "snapshot"})

        def read() -> tuple[list[bytes], str]:
            nonlocal after, job
            assert after is not None
            events = read_after(svc.redis, log, after, READ_BATCH)
            out: list[bytes] = []
            for ev in events:
                after = ev.id
                if ev.event in FINAL:
                    job = svc.jobs.get(job_id) or job
                    return [*out, sse(ev.id, "status", _final(svc, job))], DONE
                out.append(sse(ev.id, "progress" if ev.event == "progress" else "status", _change(job, ev)))
            if len(events) >= READ_BATCH:
                return out, MORE
            if not events:  # the record may be final with no log entry (predictions; an expired log)
                current = svc.jobs.get(job_id)
                if current is None:
                    return out, DONE
                if current["status"] in FINAL:
                    return [sse(after, "status", _final(svc, current))], DONE
            return out, IDLE

        yield from _follow(waiter, sock, read)


def tenant_events(svc: Services, owner: str, after: str, sock: socket.socket | None) -> Iterator[bytes]:
    """Every event of the tenant's log after `after`, then as they come."""
    log = tenant_log(owner)
    yield f"retry: {RETRY_MS}\n\n".encode()
    with svc.hub.listen(tenant_channel(owner)) as waiter:

        def read() -> tuple[list[bytes], str]:
            nonlocal after
            events = read_after(svc.redis, log, after, READ_BATCH)
            if events:
                after = events[-1].id
            return [
                sse(
                    ev.id,
                    "progress" if ev.event == "progress" else "status",
                    {
                        "id": ev.job,
                        "type": ev.type,
                        "model": ev.model or None,
                        "status": ev.status,
                        "event": ev.event,
                        "progress": ev.progress,
                    },
                )
                for ev in events
            ], MORE if len(events) >= READ_BATCH else IDLE

        yield from _follow(waiter, sock, read)


def _follow(waiter: Waiter, sock: socket.socket | None, read: Callable[[], tuple[list[bytes], str]]) -> Iterator[bytes]:
    """Send what `read()` finds whenever the hub says something changed (and now and then without a wake-up: a
    message lost while Redis reconnected costs a delay, no more), a heartbeat comment when idle; stop when `read()`
    says DONE or the client has gone."""
    beat = checked = time.monotonic()
    changed = True
    while True:
        if changed:
            chunks, state = read()
            yield from chunks
            if state == DONE:
                return
            checked = time.monotonic()
            if state == MORE:  # a backlog: read on before waiting
                continue
        if time.monotonic() - beat >= HEARTBEAT_S:
            yield b": keep-alive\n\n"
            beat = time.monotonic()
        changed = waiter.wait(min(DISCONNECT_CHECK_S, HEARTBEAT_S)) or time.monotonic() - checked >= RECHECK_S
        if client_gone(sock):
            return


@bp.get("/jobs/<job_id>/events", responses={200: {"content": SSE}})
def job_event_stream(path: JobPath, query: EventsQuery, header: EventsHeaders) -> Response:
    """The job's status and progress changes as Server-Sent Events; the stream ends after the final status."""
    svc = services()
    owner = tenant()
    if svc.jobs.get_for(owner, path.job_id) is None:
        raise ResourceNotFound(f"no job {path.job_id!r}; list yours with GET /v1/jobs")
    return _stream(job_events(svc, path.job_id, _resume_from(header, query), client_socket()), svc, owner)


@bp.get("/events", responses={200: {"content": SSE}})
def tenant_event_stream(query: EventsQuery, header: EventsHeaders) -> Response:
    """Every status and progress change of the tenant's jobs (online predictions excepted), as Server-Sent Events."""
    svc = services()
    owner = tenant()
    # "From now on" is fixed before the response starts, not when the body's generator gets to it: a client that
    # lists the jobs once the stream is open (the dashboard does) must miss nothing that happens after its list,
    # even when the subscription's confirmation takes a while (CI saw a job cancelled in that gap, never shown).
    after = _resume_from(header, query) or last_id(svc.redis, tenant_log(owner))
    return _stream(tenant_events(svc, owner, after, client_socket()), svc, owner)
