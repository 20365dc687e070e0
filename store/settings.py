"""Process settings, read once at the process edge from `MLQ_*` environment variables, never at import."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import SettingsError as SettingsError  # re-exported: its home before
from training.registry import NAME_RE, NAME_RULE


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set it to a whole number like {default}") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it like {default}") from None


def parse_tokens(raw: str) -> dict[str, str]:
    """`tenant:token,tenant2:token2` → {token: tenant}."""
    tokens: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        tenant, sep, token = part.partition(":")
        if not sep or not tenant or not token:
            raise SettingsError("MLQ_AUTH_TOKENS must look like 'tenant:token,tenant2:token2'")
        # A tenant name becomes a Redis key segment (store/keys.py) and a bucket folder: refuse what can't be one.
        if not NAME_RE.fullmatch(tenant):
            raise SettingsError(f"MLQ_AUTH_TOKENS: tenant {tenant!r} is not a valid tenant name: expected {NAME_RULE}")
        tokens[token] = tenant
    return tokens


_HOST_RE = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,252})|[0-9a-f:.]{2,45}")


def parse_allowed_hosts(raw: str) -> tuple[str, ...]:
    """`api.example.com,10.0.0.5` or `*` → lowercased host names (no port); empty: the default (api/hosts.py)."""
    hosts = []
    for part in filter(None, (p.strip().lower() for p in raw.split(","))):
        host = part.removeprefix("[").removesuffix("]").rstrip(".")
        if part != "*" and not _HOST_RE.fullmatch(host):
            raise SettingsError(
                f"MLQ_ALLOWED_HOSTS: {part!r} is not a host name; list names without scheme or port, "
                "like 'api.example.com,10.0.0.5', or '*' to allow every Host (behind a proxy that checks it)"
            )
        hosts.append("*" if part == "*" else host)
    return tuple(hosts)


def parse_preload(raw: str) -> tuple[tuple[str, str, str], ...]:
    """`name:alias,tenant/name:3` → ((tenant, name, ref), ...); the tenant defaults to `default`."""
    out = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        model, _, ref = part.partition(":")
        tenant, slash, name = model.rpartition("/")
        if not name:
            raise SettingsError("MLQ_PRELOAD must look like 'name:alias,tenant/name:3'")
        out.append((tenant if slash else "default", name, ref or "production"))
    return tuple(out)


def parse_pin_aliases(raw: str) -> tuple[str, ...]:
    """`production,staging` → ("production", "staging"): aliases whose versions no model cache evicts."""
    names = tuple(filter(None, (p.strip() for p in raw.split(","))))
    bad = [n for n in names if not n.replace("-", "").replace("_", "").replace(".", "").isalnum()]
    if bad:
        raise SettingsError(
            f"MLQ_PIN_ALIASES names {', '.join(map(repr, bad))}, not an alias name; "
            "write alias names separated by commas, e.g. production,staging"
        )
    return names


def parse_weights(raw: str, tenants: set[str]) -> dict[str, float]:
    """`acme=3,beta=1` → {tenant: weight}; every tenant must be one the API knows (MLQ_AUTH_TOKENS, else default)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        tenant, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not tenant.strip() or not weight > 0 or weight == float("inf"):
            raise SettingsError(
                f"MLQ_TENANT_WEIGHTS: {part!r} is not tenant=weight with a weight above 0; "
                "set it like 'acme=3,beta=1' (a tenant not named weighs 1)"
            )
        if tenant.strip() not in tenants:
            raise SettingsError(
                f"MLQ_TENANT_WEIGHTS names tenant {tenant.strip()!r}, which is not a tenant of MLQ_AUTH_TOKENS "
                f"(known: {', '.join(sorted(tenants))}); remove it or add the tenant's token"
            )
        weights[tenant.strip()] = weight
    return weights


def _cap(env: Mapping[str, str]) -> int:
    raw = env.get("MLQ_MAX_RUNNING_PER_TENANT", "")
    if raw.strip() == "":
        return 0
    value = _int(env, "MLQ_MAX_RUNNING_PER_TENANT", 0)
    if value < 1:
        raise SettingsError(
            f"MLQ_MAX_RUNNING_PER_TENANT={value}: a cap of 0 would run nothing; set it to 1 or more, "
            "or leave it unset for no cap"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a process of mlqueue is configured with. See the README's settings table."""

    redis_url: str = "redis://localhost:6379/0"
    home: Path = Path(".mlqueue")
    auth_tokens: Mapping[str, str] = field(default_factory=dict)  # token → tenant; empty: no auth
    # Host header values the API answers (api/hosts.py, against DNS rebinding); empty: localhost, 127.0.0.1, ::1
    # and the bind address without tokens, every host with tokens; ("*",): every host.
    allowed_hosts: tuple[str, ...] = ()
    preload: tuple[tuple[str, str, str], ...] = ()
    max_upload_mb: int = 100
    max_batch_rows: int = 1000
    job_ttl_s: int = 7 * 24 * 3600  # finished job records expire after this
    job_time_limit_s: int = 6 * 3600  # the longest a job may run
    visibility_timeout_s: int = 12 * 3600  # > longest job + queue wait, or Redis redelivers running jobs
    max_attempts: int = 3
    heartbeat_s: float = 2.0
    torch_threads: int = 1
    batch_max_size: int = 64
    batch_max_delay_ms: float = 2.0
    # Priority lanes: the longest a normal-priority prediction may be passed over for high-priority ones.
    priority_max_passover_ms: float = 100.0
    # Model residency (worker/model_cache.py): the memory each inference worker process may fill with loaded
    # versions on its device (0: no memory budget, only 32 versions at most), and the aliases whose versions
    # are never evicted (MLQ_PRELOAD's entries are pinned too).
    model_memory_mb: int = 0
    pin_aliases: tuple[str, ...] = ()
    secret_key: str = ""
    # Limits on what a client controls (issue: nothing lost, nobody in).
    max_rows: int = 1_000_000  # rows in an uploaded dataset
    max_columns: int = 1000  # columns in an uploaded dataset
    max_epochs: int = 1000
    max_hidden_units: int = 4096  # per hidden layer of an mlp
    max_active_jobs: int = 100  # queued + running jobs per tenant; more → 429
    rate_limit_per_minute: int = 0  # job submissions per tenant per minute; 0 = unlimited
    # Serving (per API process): waits and event streams held at once, in all and per tenant; past them a wait
    # answers at once (202) and a stream is refused (429).
    max_waits: int = 2000
    max_waits_per_tenant: int = 250
    max_json_mb: int = 4  # a JSON body larger than this is refused (413) before it is read
    client_timeout_s: float = 30.0  # a client that sends or reads nothing for this long is disconnected
    # Reliability: a running job whose heartbeat is older than this is put back on its queue.
    stale_job_s: float = 10.0
    shutdown_grace_s: float = 20.0  # SIGTERM: a training may finish within this, else it checkpoints and requeues
    # A prediction read by a worker that then died is taken over by another after this long; longer than any batch.
    inference_claim_idle_s: float = 30.0
    # Batch prediction: rows read, scored and checkpointed at a time (bounds a batch worker's memory), and the
    # niceness a batch-only worker process takes so the kernel runs online inference first.
    batch_chunk_rows: int = 10_000
    batch_nice: int = 10
    max_search_trials: int = 100  # trials one hyperparameter search may run; more → 422
    # Artifacts shared by processes on several hosts (store/artifacts.py): "" keeps everything under `home`;
    # file:///dir or s3://bucket/prefix puts datasets, versions, checkpoints and outputs there, and `home` only
    # holds this process's working copies.
    artifacts: str = ""
    s3_endpoint_url: str = ""  # e.g. http://minio:9000; empty: boto3's own (AWS_ENDPOINT_URL…, else AWS)
    cache_dir: Path | None = None  # downloaded datasets and versions; None: <home>/cache
    cache_max_mb: int = 10_240
    # Drift: inference and batch workers count live inputs and predictions into the manifest's reference bins.
    drift_counting: bool = True
    # An uploaded ONNX model (POST /v1/models/{name}/versions): its file, tokenizer and external data together.
    max_model_mb: int = 500
    # Traffic: how long an alias change or a rollout step waits for the inference workers to load a version.
    ready_timeout_s: float = 60.0
    # Fair scheduling of the train and batch queues (store/fair.py): a tenant's share (default 1) and the most
    # train (or batch) jobs one tenant may run at once on its queue's workers; 0: no cap.
    tenant_weights: Mapping[str, float] = field(default_factory=dict)
    max_running_per_tenant: int = 0
    # With Sentinel, a job submission is answered only once a replica has it (WAIT 1), or after this long; 0: never.
    redis_wait_ms: int = 1000

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs"

    @property
    def artifact_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def searches_dir(self) -> Path:
        return self.home / "searches"  # search trials' models, until the search registers the best

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        auth_tokens = parse_tokens(env.get("MLQ_AUTH_TOKENS", ""))
        return cls(
            redis_url=_redis_url(env.get("MLQ_REDIS_URL") or d.redis_url),
            home=Path(env.get("MLQ_HOME") or d.home).absolute(),
            auth_tokens=auth_tokens,
            allowed_hosts=parse_allowed_hosts(env.get("MLQ_ALLOWED_HOSTS", "")),
            preload=parse_preload(env.get("MLQ_PRELOAD", "")),
            max_upload_mb=_int(env, "MLQ_MAX_UPLOAD_MB", d.max_upload_mb, 1),
            max_batch_rows=_int(env, "MLQ_MAX_BATCH_ROWS", d.max_batch_rows, 1),
            job_ttl_s=_int(env, "MLQ_JOB_TTL_S", d.job_ttl_s, 60),
            job_time_limit_s=_int(env, "MLQ_JOB_TIME_LIMIT_S", d.job_time_limit_s, 1),
            visibility_timeout_s=_int(env, "MLQ_VISIBILITY_TIMEOUT_S", d.visibility_timeout_s, 60),
            max_attempts=_int(env, "MLQ_MAX_ATTEMPTS", d.max_attempts, 1),
            heartbeat_s=_float(env, "MLQ_HEARTBEAT_S", d.heartbeat_s),
            torch_threads=_int(env, "MLQ_TORCH_THREADS", d.torch_threads, 1),
            batch_max_size=_int(env, "MLQ_BATCH_MAX_SIZE", d.batch_max_size, 1),
            batch_max_delay_ms=_float(env, "MLQ_BATCH_MAX_DELAY_MS", d.batch_max_delay_ms),
            priority_max_passover_ms=_float(env, "MLQ_PRIORITY_MAX_PASSOVER_MS", d.priority_max_passover_ms),
            model_memory_mb=_int(env, "MLQ_MODEL_MEMORY_MB", d.model_memory_mb, 0),
            pin_aliases=parse_pin_aliases(env.get("MLQ_PIN_ALIASES", "")),
            secret_key=env.get("MLQ_SECRET_KEY", ""),
            max_rows=_int(env, "MLQ_MAX_ROWS", d.max_rows, 1),
            max_columns=_int(env, "MLQ_MAX_COLUMNS", d.max_columns, 1),
            max_epochs=_int(env, "MLQ_MAX_EPOCHS", d.max_epochs, 1),
            max_hidden_units=_int(env, "MLQ_MAX_HIDDEN_UNITS", d.max_hidden_units, 1),
            max_active_jobs=_int(env, "MLQ_MAX_ACTIVE_JOBS", d.max_active_jobs, 1),
            rate_limit_per_minute=_int(env, "MLQ_RATE_LIMIT_PER_MINUTE", d.rate_limit_per_minute, 0),
            max_waits=_int(env, "MLQ_MAX_WAITS", d.max_waits, 0),
            max_waits_per_tenant=_int(env, "MLQ_MAX_WAITS_PER_TENANT", d.max_waits_per_tenant, 0),
            max_json_mb=_int(env, "MLQ_MAX_JSON_MB", d.max_json_mb, 1),
            client_timeout_s=_float(env, "MLQ_CLIENT_TIMEOUT_S", d.client_timeout_s),
            stale_job_s=_float(env, "MLQ_STALE_JOB_S", d.stale_job_s),
            shutdown_grace_s=_float(env, "MLQ_SHUTDOWN_GRACE_S", d.shutdown_grace_s),
            inference_claim_idle_s=_float(env, "MLQ_INFERENCE_CLAIM_IDLE_S", d.inference_claim_idle_s),
            batch_chunk_rows=_int(env, "MLQ_BATCH_CHUNK_ROWS", d.batch_chunk_rows, 1),
            batch_nice=_int(env, "MLQ_BATCH_NICE", d.batch_nice, 0),
            max_search_trials=_int(env, "MLQ_MAX_SEARCH_TRIALS", d.max_search_trials, 1),
            artifacts=_store_url(env.get("MLQ_ARTIFACTS", "")),
            s3_endpoint_url=env.get("MLQ_S3_ENDPOINT_URL", ""),
            cache_dir=Path(env["MLQ_CACHE_DIR"]).absolute() if env.get("MLQ_CACHE_DIR") else None,
            cache_max_mb=_int(env, "MLQ_CACHE_MAX_MB", d.cache_max_mb, 1),
            drift_counting=_int(env, "MLQ_DRIFT_COUNTING", int(d.drift_counting), 0) != 0,
            max_model_mb=_int(env, "MLQ_MAX_MODEL_MB", d.max_model_mb, 1),
            ready_timeout_s=_float(env, "MLQ_READY_TIMEOUT_S", d.ready_timeout_s),
            tenant_weights=parse_weights(
                env.get("MLQ_TENANT_WEIGHTS", ""), set(auth_tokens.values()) if auth_tokens else {"default"}
            ),
            max_running_per_tenant=_cap(env),
            redis_wait_ms=_int(env, "MLQ_REDIS_WAIT_MS", d.redis_wait_ms, 0),
        )


def _redis_url(raw: str) -> str:
    from store.redis_url import check  # imports redis; here to keep this module's imports stdlib-only

    return check(raw.strip())


def _store_url(raw: str) -> str:
    from store.artifacts import parse_store_url  # stdlib-only; imported here to keep this module's imports flat

    if raw.strip():
        try:
            parse_store_url(raw.strip())
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return raw.strip()
