"""The soak's invariants, checked at the end from Redis and the artifact store alone, and its table."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from store import keys
from store.jobs import JobStore
from training.errors import ResourceNotFound
from training.registry import ModelRegistry

FINAL = ("succeeded", "failed", "cancelled")
REGISTERING = ("train", "search", "optimize")  # a succeeded one registers exactly one version


@dataclass
class Outcomes:
    """What the clients saw and what the chaos loop did, collected while the soak ran."""

    submitted: list[tuple[str, str, str]] = field(default_factory=list)  # (job id, type, tenant) acknowledged
    statuses: list[tuple[float, int, str]] = field(default_factory=list)  # (time, HTTP status, route kind)
    predicts: list[tuple[int, str | None]] = field(default_factory=list)  # (final HTTP status or 0, job id if 202)
    redis_windows: list[tuple[float, float]] = field(default_factory=list)  # Redis down: (from, to + grace)
    actions: Counter[str] = field(default_factory=Counter)


def job_ids(client: redis.Redis, tenants: list[str]) -> list[str]:
    return [str(j) for t in tenants for j in client.zrange(keys.tenant_jobs(t), 0, -1)]


def final_events(client: redis.Redis, job_id: str) -> int:
    entries = client.xrange(keys.job_log(job_id)) or []
    return sum(1 for _, entry in entries if entry and str(entry.get("event")) in FINAL)


def check(
    client: redis.Redis,
    registry_dir: Path,
    tenants: list[str],
    out: Outcomes,
    batch_output: Callable[[str, str], bytes | None],
    batch_rows: int,
) -> tuple[Counter[tuple[str, str]], list[str]]:
    """(jobs by (type, status), violations)."""
    jobs = JobStore(client, ttl_s=3600)
    violations: list[str] = []
    records: dict[str, Any] = {}
    for job_id in job_ids(client, tenants):
        job = jobs.get(job_id)
        if job is not None:
            records[job_id] = job
    for job_id, job_type, tenant in out.submitted:
        if job_id not in records:
            violations.append(f"acknowledged {job_type} job {job_id} of {tenant} is gone")
    by_state: Counter[tuple[str, str]] = Counter()
    for job_id, job in records.items():
        by_state[(job["type"], job["status"])] += 1
        if job["type"] == "predict":
            continue
        if job["status"] not in FINAL:
            violations.append(f"{job['type']} job {job_id} is stuck {job['status']}")
        elif (n := final_events(client, job_id)) != 1:
            violations.append(f"{job['type']} job {job_id} reached a final state {n} times")
    violations += _versions(records, registry_dir, tenants)
    for job_id, job in records.items():
        if job["type"] == "batch_predict" and job["status"] == "succeeded":
            violations += _batch_rows(job_id, batch_output(job["tenant"], job_id), batch_rows)
    violations += _answers(out, records)
    return by_state, violations


def _versions(records: dict[str, Any], registry_dir: Path, tenants: list[str]) -> list[str]:
    registry = ModelRegistry(registry_dir)
    owners: Counter[str] = Counter()
    for tenant in tenants:
        for model in {str(j["model"]) for j in records.values() if j["tenant"] == tenant and j["model"]}:
            try:
                versions = registry.get_model(tenant, model)["versions"]
            except ResourceNotFound:
                continue
            for manifest in versions:
                owner = str(manifest.get("job_id") or "")
                parent = (records.get(owner) or {}).get("request", {}) or {}
                owners[str(parent.get("parent") or owner)] += 1  # a search registers its best trial
    found = []
    for job_id, job in records.items():
        if job["type"] not in REGISTERING or (job.get("request") or {}).get("parent"):
            continue
        expected = 1 if job["status"] == "succeeded" else 0
        if owners[job_id] != expected:
            found.append(f"{job['type']} job {job_id} ({job['status']}) registered {owners[job_id]} versions")
    return found


def _batch_rows(job_id: str, body: bytes | None, rows: int) -> list[str]:
    if body is None:
        return [f"batch job {job_id}: its output could not be read"]
    ids = [int(r["rid"]) for r in csv.DictReader(io.StringIO(body.decode()))]
    return [] if ids == list(range(rows)) else [f"batch job {job_id}: rows {ids[:5]}… are not 0..{rows - 1} once"]


def _answers(out: Outcomes, records: dict[str, Any]) -> list[str]:
    found = []
    for status, job_id in out.predicts:
        if status == 0:
            found.append("a prediction got no answer")
        elif status == 202 and (job_id is None or (records.get(job_id) or {}).get("status") not in FINAL):
            found.append(f"prediction {job_id} was accepted (202) but never answered")
    for at, status, route in out.statuses:
        in_window = any(start <= at <= end for start, end in out.redis_windows)
        if status >= 500 and not (status == 503 and in_window):
            found.append(f"{route}: {status} {'during' if in_window else 'outside'} a Redis restart")
    return found


def table(by_state: Counter[tuple[str, str]], out: Outcomes, violations: list[str], minutes: float) -> str:
    types = sorted({t for t, _ in by_state})
    states = ["succeeded", "failed", "cancelled", "queued", "running"]
    lines = [f"Soak: {minutes:g} min, {len(out.submitted)} jobs acknowledged, {len(out.predicts)} predictions", ""]
    lines.append(f"{'job type':<15}" + "".join(f"{s:>11}" for s in states))
    for jtype in types:
        lines.append(f"{jtype:<15}" + "".join(f"{by_state[(jtype, s)]:>11}" for s in states))
    lines.append("")
    statuses = Counter(s for _, s, _ in out.statuses)
    lines.append("HTTP answers: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    lines.append("chaos: " + ", ".join(f"{k}: {n}" for k, n in sorted(out.actions.items())))
    lines.append(f"violations: {len(violations)}")
    lines += [f"  - {v}" for v in violations[:50]]
    return "\n".join(lines)
