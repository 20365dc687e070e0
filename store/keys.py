"""Every Redis key, channel and stream name mlqueue uses, in one place. Stdlib only (the API imports it).

No other module under api/, worker/, training/ or mlqueue/ spells an `mlq:` name (tests/unit/test_keys.py checks),
so a renamed or re-prefixed key changes here and nowhere else. The Lua scripts get their keys as KEYS from these
functions; the few names a script must derive itself (from a record's tenant) are in store/lua/keys.lua, which
the same test compares with this module.
"""

from __future__ import annotations

PREFIX = "mlq:"

# ---- one job ----------------------------------------------------------------------------------------------


def job(job_id: str) -> str:
    """The job's record: a hash (JSON fields stored as strings)."""
    return f"{PREFIX}job:{job_id}"


def job_channel(job_id: str) -> str:
    """PUBLISHed on every change of the job: wakes waiters, carries only the event kind."""
    return f"{job(job_id)}:events"


def job_log(job_id: str) -> str:
    """The job's event log: a Stream, one entry per change (its ids are the SSE event ids)."""
    return f"{job(job_id)}:log"


def job_cancel(job_id: str) -> str:
    """The job's cancel flag: set once a cancel was requested."""
    return f"{job(job_id)}:cancel"


def job_heartbeat(job_id: str) -> str:
    """The running attempt's lease (`worker:attempt`); expires when its worker dies."""
    return f"{job(job_id)}:heartbeat"


def job_registered(job_id: str) -> str:
    """The registration claim: which attempt may register the job's model version."""
    return f"{job(job_id)}:registered"


def job_reply(job_id: str) -> str:
    """An online prediction's reply list: the finished record, pushed for the submitter's BLPOP."""
    return f"{job(job_id)}:reply"


def search_concluding(search_id: str) -> str:
    """Held while one process concludes a search (picks and registers its best trial)."""
    return f"{job(search_id)}:concluding"


# ---- all jobs -------------------------------------------------------------------------------------------

RUNNING_JOBS = f"{PREFIX}jobs:running"  # set of the ids of running jobs (the sweeper's work list)
METRICS_JOBS = f"{PREFIX}metrics:jobs"  # field "{type}:{status}" → jobs that reached that status
METRICS_DURATION = f"{PREFIX}metrics:duration"  # "{type}:le:{bound}" (cumulative), "{type}:sum", "{type}:count"

# ---- one tenant -----------------------------------------------------------------------------------------


def tenant_jobs(tenant: str) -> str:
    """The tenant's jobs for listing: a sorted set, score = created ms."""
    return f"{PREFIX}jobs:{tenant}"


def tenant_active(tenant: str) -> str:
    """The tenant's queued + running job ids, for MLQ_MAX_ACTIVE_JOBS."""
    return f"{PREFIX}active:{tenant}"


def tenant_log(tenant: str) -> str:
    """The tenant's event log: a Stream of every change of its jobs but online predictions."""
    return f"{PREFIX}tenant:{tenant}:log"


def tenant_channel(tenant: str) -> str:
    """PUBLISHed (the job id) with every entry of the tenant's log."""
    return f"{PREFIX}tenant:{tenant}:events"


def rate_window(tenant: str, window: int) -> str:
    """The tenant's job submissions in one fixed rate-limit window."""
    return f"{PREFIX}rate:{tenant}:{window}"


def idempotency(tenant: str, digest: str) -> str:
    """A stored Idempotency-Key (by its digest) and the job it created."""
    return f"{PREFIX}idem:{tenant}:{digest}"


# ---- online inference -----------------------------------------------------------------------------------

INFERENCE_STREAM = f"{PREFIX}inference:requests"  # the prediction requests, read by a consumer group
INFERENCE_STATS = f"{PREFIX}inference:stats"  # the inference workers' batching counters

# ---- workers ----------------------------------------------------------------------------------------------

WORKER_PREFIX = f"{PREFIX}worker:"  # + "{hostname}:{pid}": one liveness key per worker process


def worker(hostname: str, pid: int) -> str:
    return f"{WORKER_PREFIX}{hostname}:{pid}"


def drain(hostname: str) -> str:
    """Written by a worker's main process on SIGTERM: its deadline for trainings to stop and requeue."""
    return f"{PREFIX}drain:{hostname}"


# ---- the model registry on an S3-compatible store (store/remote_registry.py) --------------------------------
REGISTRY_EPOCH = f"{PREFIX}registry:epoch"  # changes when Redis lost the registry's counters (a flush, a new server)


def registry_model(model_path: str) -> str:
    """A model's version counter and change counter (`<tenant>/<model>`); `:lock` appended: its change lock."""
    return f"{PREFIX}registry:{model_path}"


# ---- fair scheduling of the train and batch queues (store/fair.py) -----------------------------------------
# Tenant-scoped keys live under mlq:t:{tenant}: (issue 18), so no tenant name can collide with a global key.
TENANT_PREFIX = f"{PREFIX}t:"


def fair_suffix(queue: str) -> str:
    """What follows `mlq:t:{tenant}:` in a tenant's fair-queue keys of `queue` (fair_pick.lua derives them)."""
    return f"fair:{queue}:"


def fair_flows(tenant: str, queue: str) -> str:
    """The tenant's flows with queued jobs (a ring: its other jobs, and one per search), served in turn."""
    return f"{TENANT_PREFIX}{tenant}:{fair_suffix(queue)}flows"


def fair_flow(tenant: str, queue: str, flow: str) -> str:
    """One flow's queued job ids, oldest first."""
    return f"{TENANT_PREFIX}{tenant}:{fair_suffix(queue)}flow:{flow}"


def fair_tenants(queue: str) -> str:
    """The tenants with queued jobs on `queue` (a set)."""
    return f"{PREFIX}fair:{queue}:tenants"


def fair_pass(queue: str) -> str:
    """Each tenant's virtual time on `queue` (a hash): the tenant with the lowest is served next."""
    return f"{PREFIX}fair:{queue}:pass"


def fair_vtime(queue: str) -> str:
    """The virtual time of the last job picked on `queue`: where a tenant that had nothing queued starts."""
    return f"{PREFIX}fair:{queue}:vtime"


def fair_picked(queue: str) -> str:
    """Jobs picked but maybe not started yet: job id → "tenant\\nflow" (a hash)."""
    return f"{PREFIX}fair:{queue}:picked"


def fair_picked_at(queue: str) -> str:
    """When each picked job was picked, ms (a sorted set): one still queued long after goes back to its flow."""
    return f"{PREFIX}fair:{queue}:picked_at"


# ---- replication (Sentinel mode, store/redis_url.py) ---------------------------------------------------------
REPLICATION_PROBE = f"{PREFIX}replication:probe"  # written right before WAIT: its offset covers every earlier write
