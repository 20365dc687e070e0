"""The event logs of jobs, read by the API's event streams (SSE). Stdlib + redis-py only (the API imports it).

The Lua `emit` of store/job_scripts.py writes them: `mlq:job:{id}:log`, one Redis Stream entry per change of a job
(queued, running, progress, cancel_requested, final), and `mlq:t:{t}:log`, the same for all of a tenant's jobs
but online predictions. Stream entry ids ("1732891234567-0") are the SSE event ids: a client that reconnects with
Last-Event-ID reads on from there and misses nothing. Each change is also PUBLISHed on `mlq:job:{id}:events` and
`mlq:t:{t}:events`, which only wakes readers (api/hub.py); the logs carry the data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import redis

from store import keys

# Stream ids as Redis writes them: two unsigned 64-bit numbers. Anything else in a Last-Event-ID is refused (400),
# never passed to XRANGE: `99999999999999999999-1` matched a looser check, Redis refused it, and the stream ended
# right after `retry:`, so a browser's EventSource reconnected with the same id forever.
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # [0-9]: \d also matches other scripts' digits
U64_MAX = 2**64 - 1


def job_log(job_id: str) -> str:
    return keys.job_log(job_id)


def tenant_log(tenant: str) -> str:
    return keys.tenant_log(tenant)


def tenant_channel(tenant: str) -> str:
    return keys.tenant_channel(tenant)


def valid_event_id(value: str | None) -> str | None:
    """`value` when it is a stream id this server could have sent; None when there is none (empty); ValueError
    saying why for anything else."""
    value = (value or "").strip()
    if not value:
        return None
    found = _STREAM_ID.fullmatch(value)
    if found is None:
        raise ValueError("an event id is two whole numbers joined by '-', like 1732891234567-0")
    ms, seq = int(found.group(1)), int(found.group(2))
    if ms > U64_MAX or seq > U64_MAX:
        raise ValueError(f"both parts of an event id are at most {U64_MAX}")
    if (ms, seq) == (U64_MAX, U64_MAX):
        raise ValueError("no event can follow the largest event id")
    return value


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's or a tenant's event log."""

    id: str  # the stream entry id, sent as the SSE `id:`
    event: str  # queued | running | progress | cancel_requested | succeeded | failed | cancelled
    status: str  # the job's status right after the change
    progress: dict[str, Any] | None
    job: str = ""  # tenant logs only: which job, its type and model
    type: str = ""
    model: str = ""

    @classmethod
    def from_entry(cls, entry_id: Any, fields: dict[Any, Any]) -> JobEvent:
        text = {_text(k): _text(v) for k, v in fields.items()}
        progress = text.get("progress") or ""
        return cls(
            id=_text(entry_id),
            event=text.get("event", ""),
            status=text.get("status", ""),
            progress=json.loads(progress) if progress else None,
            job=text.get("job", ""),
            type=text.get("type", ""),
            model=text.get("model") or "",
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_after(client: redis.Redis, key: str, after: str, count: int = 200) -> list[JobEvent]:
    """Entries of the log `key` strictly after the id `after` ("0-0" for all), oldest first."""
    entries: Any = client.xrange(key, min=f"({after}", max="+", count=count)
    return [JobEvent.from_entry(entry_id, fields) for entry_id, fields in entries]


def last_id(client: redis.Redis, key: str) -> str:
    """The id of the newest entry of the log `key`, "0-0" when it is empty or gone."""
    newest: Any = client.xrevrange(key, max="+", min="-", count=1)
    return _text(newest[0][0]) if newest else "0-0"
