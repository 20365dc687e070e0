"""store/keys.py is the one place that spells Redis key names, and store/lua/lib/keys.lua agrees with it."""

from __future__ import annotations

import inspect
import random
import re
import string
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from store import keys
from store.lua_loader import raw_source
from store.settings import SettingsError, parse_tokens
from training.registry import NAME_RE

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "worker", "store", "training", "mlqueue")  # those that exist
KEYS_MODULE = Path(keys.__file__).resolve()
# A string literal that starts a key name: "mlq:..., 'mlq:..., f"mlq:..., b'mlq:...
_KEY_LITERAL = re.compile(r"""(?<![\w`])[rbfRBF]{0,2}["']mlq:""")


def test_no_module_but_store_keys_spells_a_key_name() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.resolve() == KEYS_MODULE:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if _KEY_LITERAL.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "use store.keys instead:\n" + "\n".join(offenders)


def test_the_key_names_lua_derives_are_the_ones_python_uses(redis_client: redis.Redis) -> None:
    probe = (
        raw_source("lib/keys.lua")
        + """
return {job_id_of(ARGV[1]), job_log_key(ARGV[1]), tenant_log_key(ARGV[2]), tenant_channel_key(ARGV[2]),
        tenant_active_key(ARGV[2])}
"""
    )
    job_id, tenant = "job_01ABC", "acme"
    assert redis_client.eval(probe, 0, keys.job(job_id), tenant) == [
        job_id,
        keys.job_log(job_id),
        keys.tenant_log(tenant),
        keys.tenant_channel(tenant),
        keys.tenant_active(tenant),
    ]


def test_every_key_is_under_the_prefix() -> None:
    names = [
        keys.job("j"),
        keys.job_channel("j"),
        keys.job_log("j"),
        keys.job_cancel("j"),
        keys.job_heartbeat("j"),
        keys.job_registered("j"),
        keys.job_reply("j"),
        keys.search_concluding("j"),
        keys.RUNNING_JOBS,
        keys.METRICS_JOBS,
        keys.METRICS_DURATION,
        keys.tenant_jobs("t"),
        keys.tenant_active("t"),
        keys.tenant_log("t"),
        keys.tenant_channel("t"),
        keys.rate_window("t", 1),
        keys.idempotency("t", "d"),
        keys.INFERENCE_STREAM,
        keys.INFERENCE_STATS,
        keys.worker("h", 1),
        keys.drain("h"),
    ]
    assert all(name.startswith(keys.PREFIX) for name in names)
    assert len(set(names)) == len(names)


# ---- the tenant namespace (issue 18: a tenant named `running` made `mlq:jobs:{tenant}` the global running set) ----


def _sample(parameter: inspect.Parameter) -> object:
    return 7 if parameter.annotation in (int, "int") else "x"


def _key_functions() -> list[tuple[str, Callable[..., str]]]:
    return [
        (name, fn)
        for name, fn in vars(keys).items()
        if inspect.isfunction(fn)
        and fn.__module__ == keys.__name__
        and not name.startswith("_")
        # Key builders only (they return a str); not from_legacy, the migration's parser.
        and inspect.signature(fn).return_annotation in (str, "str")
    ]


def _tenant_functions() -> list[Callable[..., str]]:
    return [fn for _, fn in _key_functions() if next(iter(inspect.signature(fn).parameters)) == "tenant"]


def _global_keys() -> set[str]:
    """Every global key and key prefix the module spells (constants, and the non-tenant functions' results)."""
    constants = {v for n, v in vars(keys).items() if n.isupper() and isinstance(v, str) and n != "TENANT_PREFIX"}
    derived = set()
    for _, fn in _key_functions():
        params = list(inspect.signature(fn).parameters.values())
        if params and params[0].name != "tenant":
            derived.add(fn(*(_sample(p) for p in params)))
    return constants | derived


def _tenant_names() -> list[str]:
    """Every global key's segments (`running`, `epoch`, `inference`...) and many random valid names."""
    suffixes = {s for key in _global_keys() for s in re.split(r"[:/]", key) if s}
    names = {s for s in suffixes if NAME_RE.fullmatch(s)} | {"t", "tenant", "jobs", "running", "default", "0"}
    rng = random.Random(18)  # fixed seed: the same names every run
    alphabet = string.ascii_lowercase + string.digits + "._-"
    while len(names) < 2000:
        first = rng.choice(string.ascii_lowercase + string.digits)
        names.add(first + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 62))))
    return sorted(names)


def test_the_test_finds_the_tenant_keys_and_the_global_keys() -> None:
    tenant_fns = {fn.__name__ for fn in _tenant_functions()}
    assert {"tenant_jobs", "tenant_active", "tenant_log", "tenant_channel", "rate_window", "idempotency"} <= tenant_fns
    assert {keys.RUNNING_JOBS, keys.METRICS_JOBS, keys.REGISTRY_EPOCH, keys.job("x")} <= _global_keys()


def test_no_global_key_is_in_the_tenant_namespace() -> None:
    assert [k for k in _global_keys() if k.startswith(keys.TENANT_PREFIX)] == []


def test_no_tenant_name_produces_a_global_key_or_another_tenants_key() -> None:
    globals_ = _global_keys()
    for tenant in _tenant_names():
        for fn in _tenant_functions():
            params = list(inspect.signature(fn).parameters.values())[1:]
            key = fn(tenant, *(_sample(p) for p in params))
            assert key.startswith(f"{keys.TENANT_PREFIX}{tenant}:"), (fn.__name__, tenant, key)
            # The tenant is exactly the segment after `mlq:t:`: no other tenant's key, and no global key.
            assert key[len(keys.TENANT_PREFIX) :].split(":", 1)[0] == tenant
            assert key not in globals_
            assert not any(key.startswith(g + ":") or key == g for g in globals_), (tenant, key)


def test_the_tenant_named_running_no_longer_shares_the_running_set() -> None:
    assert keys.tenant_jobs("running") != keys.RUNNING_JOBS
    assert keys.registry_model("registry", "epoch") != keys.REGISTRY_EPOCH


@pytest.mark.parametrize("tenant", ["Acme", "../etc", "", "-x", "a b", "t\\n", "\u00fc", "a" * 64, "{x}", "a*"])
def test_settings_refuse_a_tenant_name_that_cannot_be_a_key_segment(tenant: str) -> None:
    # (A tenant never holds ":": the tenant is what comes before the first one.)
    with pytest.raises(SettingsError, match="MLQ_AUTH_TOKENS"):
        parse_tokens(f"{tenant}:tok")


def test_settings_accept_valid_tenant_names() -> None:
    assert parse_tokens("running:tok1, acme.eu-2:tok2") == {"tok1": "running", "tok2": "acme.eu-2"}


def test_the_migration_moves_the_old_tenant_keys_and_nothing_global(redis_client: redis.Redis) -> None:
    from store.migrate_keys import migrate

    redis_client.zadd("mlq:jobs:acme", {"job_1": 1})
    redis_client.sadd("mlq:jobs:running", "job_1")
    redis_client.sadd("mlq:active:acme", "job_1")
    redis_client.xadd("mlq:tenant:acme:log", {"e": "1"})
    redis_client.set("mlq:idem:acme:abc", "job_1", ex=600)
    redis_client.hset("mlq:registry:acme/iris", "next", 3)
    redis_client.set("mlq:registry:epoch", "e1")
    redis_client.zadd(keys.tenant_jobs("beta"), {"job_2": 2})
    redis_client.zadd("mlq:jobs:beta", {"job_3": 3})  # its new name exists: left, reported, not overwritten
    moved, left = migrate(redis_client)
    assert (moved, left) == (5, ["mlq:jobs:beta"])
    assert redis_client.zrange(keys.tenant_jobs("acme"), 0, -1) == ["job_1"]
    assert redis_client.smembers(keys.tenant_active("acme")) == {"job_1"}
    assert redis_client.xlen(keys.tenant_log("acme")) == 1
    assert 0 < redis_client.ttl(keys.idempotency("acme", "abc")) <= 600
    assert redis_client.hget(keys.registry_model("acme", "iris"), "next") == "3"
    assert redis_client.smembers(keys.RUNNING_JOBS) == {"job_1"}
    assert redis_client.get(keys.REGISTRY_EPOCH) == "e1"
    assert redis_client.zrange(keys.tenant_jobs("beta"), 0, -1) == ["job_2"]
    assert migrate(redis_client) == (0, ["mlq:jobs:beta"])
