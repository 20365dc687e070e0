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
# Every tenant-scoped key lives under `mlq:t:{tenant}:` and no global key starts with `mlq:t:`, so no tenant name
# can produce a global key (a tenant named `running` once turned `mlq:jobs:{tenant}` into `mlq:jobs:running`).
# Tenant names match training.registry.NAME_RE (no `:`), checked when MLQ_AUTH_TOKENS is read, so the tenant is
# exactly the segment after `mlq:t:` and two tenants never share a key either.
TENANT_PREFIX = f"{PREFIX}t:"


def tenant_key(tenant: str, suffix: str) -> str:
    """`mlq:t:{tenant}:{suffix}`: the one form of a tenant-scoped key (new tenant keys are built with this)."""
    return f"{TENANT_PREFIX}{tenant}:{suffix}"


def tenant_jobs(tenant: str) -> str:
    """The tenant's jobs for listing: a sorted set, score = created ms."""
    return tenant_key(tenant, "jobs")


def tenant_active(tenant: str) -> str:
    """The tenant's queued + running job ids, for MLQ_MAX_ACTIVE_JOBS."""
    return tenant_key(tenant, "active")


def tenant_log(tenant: str) -> str:
    """The tenant's event log: a Stream of every change of its jobs but online predictions."""
    return tenant_key(tenant, "log")


def tenant_channel(tenant: str) -> str:
    """PUBLISHed (the job id) with every entry of the tenant's log."""
    return tenant_key(tenant, "events")


def rate_window(tenant: str, window: int) -> str:
    """The tenant's job submissions in one fixed rate-limit window."""
    return tenant_key(tenant, f"rate:{window}")


def idempotency(tenant: str, digest: str) -> str:
    """A stored Idempotency-Key (by its digest) and the job it created."""
    return tenant_key(tenant, f"idem:{digest}")


def registry_model(tenant: str, model: str) -> str:
    """A model's version counter and change counter (store/remote_registry.py); `:lock` appended: its change lock."""
    return tenant_key(tenant, f"registry:{model}")


# ---- online inference -----------------------------------------------------------------------------------

INFERENCE_STREAM = f"{PREFIX}inference:requests"  # the prediction requests, read by a consumer group
INFERENCE_STREAM_HIGH = f"{PREFIX}inference:requests:high"  # the high-priority lane, read before the one above
INFERENCE_STATS = f"{PREFIX}inference:stats"  # the inference workers' batching counters
INFERENCE_RESIDENCY = f"{PREFIX}inference:residency"  # the model caches' counters (hits, loads, evictions)
INFERENCE_RESIDENT = f"{PREFIX}inference:resident"  # per worker process: the bytes its model cache holds


def inference_doorbell(consumer: str) -> str:
    """An inference consumer's doorbell: a Stream of the request ids other consumers handed to it (warm routing)."""
    return f"{PREFIX}inference:doorbell:{consumer}"


def warm_holders(tenant: str, name: str, version: int) -> str:
    """The inference consumers holding a model version in memory: a set of consumer names (warm routing)."""
    return f"{PREFIX}t:{tenant}:warm:{name}:{version}"


def serving_policy(tenant: str, model: str) -> str:
    """A model's serving policy (batch size, queue delay, queue cap; per alias too): JSON (store/serving.py)."""
    return f"{PREFIX}t:{tenant}:serving:{model}"


def queued_predictions(tenant: str, model: str) -> str:
    """The model's queued predictions counted against its `max_queued` cap: a sorted set, score = queued ms."""
    return f"{PREFIX}t:{tenant}:queued:{model}"


# ---- workers ----------------------------------------------------------------------------------------------

WORKER_PREFIX = f"{PREFIX}worker:"  # + "{hostname}:{pid}": one liveness key per worker process


def worker(hostname: str, pid: int) -> str:
    return f"{WORKER_PREFIX}{hostname}:{pid}"


def drain(hostname: str) -> str:
    """Written by a worker's main process on SIGTERM: its deadline for trainings to stop and requeue."""
    return f"{PREFIX}drain:{hostname}"


# ---- the model registry on an S3-compatible store (store/remote_registry.py) --------------------------------
REGISTRY_EPOCH = f"{PREFIX}registry:epoch"  # changes when Redis lost the registry's counters (a flush, a new server)


# ---- drift (store/drift_counts.py) -------------------------------------------------------------------------
DRIFT_ACTIVE = f"{PREFIX}drift:active"  # sorted set: JSON [tenant, model, version] → last counted (unix s)


def drift_counts(tenant: str, model: str, version: int, bucket: int) -> str:
    """A version's live drift bins in one time bucket (a hash: field → count; expires). Tenant-scoped, in the
    `mlq:t:{tenant}:` namespace of issue 18, so no tenant name can collide with a global key."""
    return tenant_key(tenant, f"drift:{model}:{version}:{bucket}")


# ---- the layout before issue 18 (tenant keys beside the global ones): only store/migrate_keys.py reads these ----
LEGACY_TENANT_PATTERNS = (f"{PREFIX}jobs:*", f"{PREFIX}active:*", f"{PREFIX}tenant:*", f"{PREFIX}idem:*")
LEGACY_REGISTRY_PATTERN = f"{PREFIX}registry:*/*"


def from_legacy(key: str) -> tuple[str, str] | None:
    """(tenant, current key) for a tenant key of the old layout, or None for anything else (a global key)."""
    if key == RUNNING_JOBS or not key.startswith(PREFIX):
        return None
    kind, _, rest = key[len(PREFIX) :].partition(":")
    if kind == "jobs":
        return rest, tenant_jobs(rest)
    if kind == "active":
        return rest, tenant_active(rest)
    if kind == "tenant" and rest.endswith((":log", ":events")):
        tenant, _, suffix = rest.rpartition(":")
        return tenant, tenant_key(tenant, suffix)
    if kind == "idem" and ":" in rest:
        tenant, _, digest = rest.partition(":")
        return tenant, idempotency(tenant, digest)
    if kind == "registry" and "/" in rest and not rest.endswith(":lock"):
        tenant, _, model = rest.partition("/")
        return tenant, registry_model(tenant, model)
    return None


# ---- traffic on aliases, live per-version metrics, readiness (store/traffic.py, store/live_metrics.py) -------


def traffic(tenant: str, model: str) -> str:
    """A model's traffic policies: a hash, field = alias, value = the policy as JSON (weights, shadow)."""
    return f"{PREFIX}t:{tenant}:traffic:{model}"


def live_bucket(tenant: str, model: str, version: int, minute: int) -> str:
    """One minute of one version's live counters (a hash with a TTL: the windows read the last 5 or 60)."""
    return f"{PREFIX}t:{tenant}:live:{model}:{version}:{minute}"


def live_total(tenant: str, model: str, version: int) -> str:
    """One version's counters since it first served (Prometheus counters must not go down)."""
    return f"{PREFIX}t:{tenant}:live:{model}:{version}:total"


LIVE_INDEX = f"{PREFIX}live:versions"  # zset "tenant/model/version" → last minute it served (for /metrics)
WARM_REQUESTS = f"{PREFIX}warm:requests"  # zset "tenant/model/version" → when asked: what inference workers load


def ready(tenant: str, model: str, version: int) -> str:
    """The inference consumers that hold one version in memory: a hash, consumer name → when it loaded it."""
    return f"{PREFIX}t:{tenant}:ready:{model}:{version}"


def rollout_lock(tenant: str, model: str, alias: str) -> str:
    """The rollout job that owns an alias (SET NX): never two rollouts at once on one alias."""
    return f"{PREFIX}t:{tenant}:rollout:{model}:{alias}"


# ---- fair scheduling of the train and batch queues (store/fair.py) -----------------------------------------
# Tenant-scoped keys live under mlq:t:{tenant}: (issue 18), so no tenant name can collide with a global key.


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
