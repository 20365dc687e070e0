"""Fair scheduling of the `train` and `batch` queues: across tenants, and across a tenant's own searches.

Celery's queues are FIFO lists: with one train worker, a job waits behind every job queued before it, whoever's.
mlqueue keeps Celery as the carrier and changes only *which* job a message starts:

- Before a train or batch job's message is sent, FAIR_ENQUEUE puts its id in its tenant's fair queue:
  `mlq:t:{tenant}:fair:{queue}:flow:{flow}`, one list per flow (a search's trials are one flow, the tenant's other
  jobs another), and the flow in the tenant's ring `…:flows`.
- A worker that takes *any* message from the queue asks FAIR_PICK which job to run: the tenant with the lowest
  virtual time among those under `MLQ_MAX_RUNNING_PER_TENANT` (start-time fair queueing: each pick adds
  1/weight, `MLQ_TENANT_WEIGHTS`; a tenant that had nothing queued starts at the queue's current virtual time, so
  idling earns no burst), then that tenant's flows in turn, oldest job first.
- So there is still exactly one message per queued job, acked late and redelivered when a worker dies (Celery's
  at-least-once delivery is untouched); messages are interchangeable tickets. The job's own lease (begin.lua)
  still decides, atomically, whether an attempt runs, so a duplicate ticket or a race between two pickers starts
  nothing twice.
- A picked job is remembered (`mlq:fair:{queue}:picked`) until it starts; one still queued `repair_after_s`
  later (its worker died between the pick and the start) goes back to the front of its flow.
- A cancelled or expired job's entry is dropped when a pick meets it. A message whose job is in no fair queue
  (EMPTY: a re-send, or a message sent by an older version) runs its own job, as before.

Stdlib + redis only: the API enqueues, the workers pick, /metrics counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from store import keys
from store.contract import BATCH_QUEUE, TRAIN_QUEUE, JobType
from store.lua_loader import LuaScript, outcome
from store.script_outcomes import FairEnqueueOutcome, FairPickOutcome

# The queues scheduled fairly, and the job types each one runs that count against MLQ_MAX_RUNNING_PER_TENANT
# (a search's own message only fans its trials out; the trials are trainings and count).
QUEUE_TYPES: dict[str, tuple[str, ...]] = {
    TRAIN_QUEUE: (JobType.TRAIN.value, JobType.OPTIMIZE.value),
    BATCH_QUEUE: (JobType.BATCH_PREDICT.value,),
}
DEFAULT_FLOW = "jobs"
REPAIR_AFTER_S = 60.0  # a pick is followed by the lease's begin within milliseconds; this is a dead worker


def tenant_label(tenant: str, secret_key: str = "") -> str:
    """The pseudonym /metrics shows for a tenant: /metrics needs no token and names no tenant (docs/operations.md).

    HMAC-SHA256 with MLQ_SECRET_KEY, 12 hex digits: stable, and an operator who has the key maps it back
    (`python -m store.fair TENANT` prints it)."""
    return "t_" + hmac.new(secret_key.encode(), tenant.encode(), hashlib.sha256).hexdigest()[:12]


def flow_of(payload: Mapping[str, Any]) -> str:
    """A job's flow within its tenant: the search it is a trial of, else the tenant's other jobs."""
    return str(payload.get("parent") or DEFAULT_FLOW)


@dataclass(frozen=True)
class Pick:
    outcome: FairPickOutcome
    job_id: str | None = None


@dataclass(frozen=True)
class TenantLoad:
    queued: int = 0
    running: int = 0


class FairQueues:
    """The fair queues of one Redis; `weights` and `cap` are the picker's policy (the workers' settings)."""

    def __init__(
        self,
        client: redis.Redis,
        weights: Mapping[str, float] | None = None,
        cap: int = 0,
        repair_after_s: float = REPAIR_AFTER_S,
    ) -> None:
        self.redis = client
        self.weights = dict(weights or {})
        self.cap = cap
        self.repair_after_s = repair_after_s
        self._enqueue = LuaScript(client, "fair_enqueue")
        self._pick = LuaScript(client, "fair_pick")

    def enqueue(self, queue: str, tenant: str, job_id: str, flow: str = DEFAULT_FLOW) -> FairEnqueueOutcome:
        """Put the job in its tenant's fair queue (idempotent); call it before sending the job's message."""
        reply = self._enqueue(
            keys=[
                keys.fair_tenants(queue),
                keys.fair_flows(tenant, queue),
                keys.fair_flow(tenant, queue, flow),
                keys.fair_pass(queue),
                keys.fair_vtime(queue),
                keys.fair_picked(queue),
                keys.fair_picked_at(queue),
            ],
            args=[tenant, flow, job_id],
        )
        return outcome(reply, FairEnqueueOutcome)[0]

    def pick(self, queue: str) -> Pick:
        """The job to run next on `queue` (PICKED), WAIT (only capped tenants have work) or EMPTY."""
        reply = self._pick(
            keys=[
                keys.fair_tenants(queue),
                keys.fair_pass(queue),
                keys.fair_vtime(queue),
                keys.fair_picked(queue),
                keys.fair_picked_at(queue),
                keys.RUNNING_JOBS,
            ],
            args=[
                keys.TENANT_PREFIX,
                keys.fair_suffix(queue),
                keys.job(""),
                int(time.time() * 1000),
                int(self.repair_after_s * 1000),
                self.cap,
                ",".join(QUEUE_TYPES[queue]),
                json.dumps(self.weights),
            ],
        )
        result, data = outcome(reply, FairPickOutcome)
        job_id = data[0] if data else None
        return Pick(result, job_id.decode() if isinstance(job_id, bytes) else job_id)

    def loads(self, queue: str) -> dict[str, TenantLoad]:
        """Per tenant: its jobs queued fairly on `queue` and its running jobs of the queue's types (for /metrics)."""
        queued: dict[str, int] = {}
        for tenant in sorted(_text(t) for t in self.redis.smembers(keys.fair_tenants(queue))):
            flows = [_text(f) for f in self.redis.lrange(keys.fair_flows(tenant, queue), 0, -1)]
            ids = [_text(i) for f in flows for i in self.redis.lrange(keys.fair_flow(tenant, queue, f), 0, -1)]
            statuses = self._fields(ids, "status")
            queued[tenant] = sum(1 for s in statuses if s and s[0] == "queued")
        running: dict[str, int] = {}
        ids = [_text(i) for i in self.redis.smembers(keys.RUNNING_JOBS)]
        for tenant, job_type, status in self._fields(ids, "tenant", "type", "status"):
            if status == "running" and job_type in QUEUE_TYPES[queue] and tenant:
                running[tenant] = running.get(tenant, 0) + 1
        names = sorted(set(queued) | set(running))
        return {t: TenantLoad(queued.get(t, 0), running.get(t, 0)) for t in names}

    def _fields(self, ids: list[str], *names: str) -> list[tuple[str, ...]]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), *names)
        return [tuple(_text(v) for v in row) for row in pipe.execute()]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


if __name__ == "__main__":  # the /metrics label of each tenant named on the command line
    for name in sys.argv[1:]:
        print(name, tenant_label(name, os.environ.get("MLQ_SECRET_KEY", "")))
