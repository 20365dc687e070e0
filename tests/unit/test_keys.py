"""store/keys.py is the one place that spells Redis key names, and store/lua/lib/keys.lua agrees with it."""

from __future__ import annotations

import re
from pathlib import Path

import redis

from store import keys
from store.lua_loader import raw_source

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
