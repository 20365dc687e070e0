"""The Lua scripts obey store/job_states.py's TRANSITIONS: each script, driven from every status under every
condition that matters to it (cancel requested or not, a live lease or none, the attempt's own token or a stale
one, attempts left or used up), makes exactly the status changes the table lists for it, and no other."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from store import keys
from store.contract import LEASED_TASKS
from store.job_states import (
    ALLOWED,
    NOT_JOB_SCRIPTS,
    READY_STATES,
    STATUS_PRESERVING,
    TRANSITIONS,
    UNREADY_STATES,
    JobStatus,
    JobType,
    Transition,
    transitions_table,
)
from store.jobs import JobStore
from store.leases import Leases
from store.lua_loader import LUA_DIR

MAX_ATTEMPTS = 2
Drive = Callable[[JobStore, Leases, str, int], object]


def _finish_reply(jobs: JobStore, job_id: str, status: str) -> None:
    jobs.run_pipeline(lambda pipe: jobs.finish_and_reply_in(pipe, job_id, status))


def _finish(status: str) -> Drive:
    return lambda jobs, _, job_id, __: jobs.finish(job_id, status)


def _finish_reply_with(status: str) -> Drive:
    return lambda jobs, _, job_id, __: _finish_reply(jobs, job_id, status)


def _finish_fenced(status: str) -> Drive:
    return lambda _, leases, job_id, token: leases.finish(job_id, token, status)


# How each script is run: (job store, leases, job id, the token the caller believes it holds).
DRIVERS: dict[str, list[Drive]] = {
    "mark_running": [lambda jobs, _, job_id, __: jobs.mark_running(job_id, "w")],
    "begin": [lambda _, leases, job_id, __: leases.begin(job_id, "w")],
    "cancel": [lambda jobs, _, job_id, __: _ignore_conflict(lambda: jobs.request_cancel(job_id))],
    "finish": [_finish(s) for s in READY_STATES],
    "finish_reply": [_finish_reply_with(s) for s in READY_STATES],
    "finish_fenced": [_finish_fenced(s) for s in READY_STATES],
    "sweep": [lambda _, leases, job_id, __: leases.sweep_one(job_id)],
    "preempt": [lambda _, leases, job_id, token: leases.preempt(job_id, token)],
    "unrequeue": [lambda _, leases, job_id, token: leases.unrequeue(job_id, token)],
    "heartbeat": [lambda _, leases, job_id, token: leases.heartbeat(job_id, token, "w")],
    "progress": [lambda jobs, _, job_id, __: jobs.set_progress(job_id, {"fraction": 0.5})],
    "claim": [lambda _, leases, job_id, token: leases.claim_registration(job_id, token)],
}


def _ignore_conflict(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - JobConflict for a final job: the script ran and changed nothing
        assert type(exc).__name__ == "JobConflict", exc


def observed(client: redis.Redis, script: str) -> set[Transition]:
    """Every (from, to) the script made, over every status and condition; a new attempt counts as a change."""
    jobs = JobStore(client)
    leases = Leases(jobs, stale_s=30, max_attempts=MAX_ATTEMPTS)
    seen: set[Transition] = set()
    conditions = itertools.product(JobStatus, (False, True), (False, True), (0, MAX_ATTEMPTS), (0, 1))
    for (status, cancel, lease, attempts, stale), drive in itertools.product(conditions, DRIVERS[script]):
        job_id = str(jobs.create("default", JobType.TRAIN, None, {})["id"])
        client.hset(jobs.key(job_id), mapping={"status": status.value, "attempts": attempts})
        if cancel:
            client.set(keys.job_cancel(job_id), "1")
        if lease:
            client.set(keys.job_heartbeat(job_id), f"w:{attempts}", px=30_000)
        drive(jobs, leases, job_id, attempts + stale)
        after_status, after_attempts = (str(v) for v in client.hmget(jobs.key(job_id), ["status", "attempts"]))
        if (after_status, int(after_attempts)) != (status.value, attempts):
            seen.add((status, JobStatus(after_status)))
    return seen


def test_every_script_is_either_in_the_table_or_changes_no_status() -> None:
    scripts = {p.name.removesuffix(".lua") for p in LUA_DIR.iterdir() if p.name.endswith(".lua")}
    assert scripts == set(TRANSITIONS) | STATUS_PRESERVING | {"admit", "create_predict"} | NOT_JOB_SCRIPTS
    assert set(DRIVERS) == set(TRANSITIONS) | (STATUS_PRESERVING - {"admit", "create_predict"})


@pytest.mark.parametrize("script", sorted(DRIVERS))
def test_a_script_makes_exactly_the_changes_the_table_lists(redis_client: redis.Redis, script: str) -> None:
    assert observed(redis_client, script) == TRANSITIONS.get(script, frozenset())


def test_ready_states_are_final_and_every_unready_state_can_reach_one() -> None:
    assert not any(before in READY_STATES for before, _ in ALLOWED)
    for state in UNREADY_STATES:
        assert any(before == state and after in READY_STATES for before, after in ALLOWED)
    assert all(status.final == (status in READY_STATES) for status in JobStatus)


def test_the_sweeper_leases_exactly_the_job_types_the_contract_requeues() -> None:
    line = next(x for x in (LUA_DIR / "sweep.lua").read_text().splitlines() if x.startswith("local LEASED_TYPES"))
    assert set(re.findall(r"(\w+) = true", line)) == set(LEASED_TASKS)


def test_docs_architecture_renders_the_table() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
    assert transitions_table() in docs.read_text()
