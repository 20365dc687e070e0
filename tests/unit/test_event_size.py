"""Every event's progress is bounded by one cap in the event writer (store/lua/lib/emit.lua), whatever a job
records as its progress (issue 18, finding 5); the record keeps the whole progress."""

from __future__ import annotations

import json
import re

import redis

from store import job_scripts, keys
from store.jobs import JobStore
from store.lua_loader import raw_source

CAP = job_scripts.EVENT_PROGRESS_MAX


def running_job(jobs: JobStore) -> str:
    job_id = str(jobs.create("acme", "search", "m", {})["id"])
    assert jobs.mark_running(job_id, "w@h")
    return job_id


def progress_events(client: redis.Redis, job_id: str) -> list[str]:
    out = []
    for log in (keys.job_log(job_id), keys.tenant_log("acme")):
        entries: list[tuple[str, dict[str, str]]] = client.xrange(log)  # type: ignore[assignment]
        out += [fields["progress"] for _, fields in entries if fields.get("event") == "progress"]
    return out


def test_the_cap_is_the_same_in_lua_and_python() -> None:
    found = re.search(r"local EVENT_PROGRESS_MAX = (\d+)", raw_source("lib/emit.lua"))
    assert found is not None and int(found.group(1)) == CAP


def test_a_huge_progress_is_recorded_whole_and_announced_cut_to_its_fraction_and_message(
    redis_client: redis.Redis,
) -> None:
    jobs = JobStore(redis_client, ttl_s=600)
    job_id = running_job(jobs)
    message = "a" + "é" * 150  # the cut at 200 bytes falls inside the 100th "é": it must not split it
    huge = {
        "fraction": 0.25,
        "message": message,
        "trials": [{"trial": i, "params": {"p": "v" * 50}} for i in range(500)],
    }
    jobs.set_progress(job_id, huge)
    assert json.loads(redis_client.hget(keys.job(job_id), "progress") or "") == huge  # the record: whole
    events = progress_events(redis_client, job_id)
    assert len(events) == 2  # the job's log and the tenant's
    for raw in events:
        assert len(raw.encode()) <= CAP
        event = json.loads(raw)
        assert event == {"truncated": True, "fraction": 0.25, "message": "a" + "é" * 99}


def test_a_small_progress_and_a_separate_event_progress_are_announced_as_they_are(redis_client: redis.Redis) -> None:
    jobs = JobStore(redis_client, ttl_s=600)
    job_id = running_job(jobs)
    jobs.set_progress(job_id, {"fraction": 0.5, "trials": [1, 2, 3]}, {"fraction": 0.5, "trial": {"id": "t2"}})
    assert json.loads(redis_client.hget(keys.job(job_id), "progress") or "")["trials"] == [1, 2, 3]
    assert [json.loads(e) for e in progress_events(redis_client, job_id)] == [
        {"fraction": 0.5, "trial": {"id": "t2"}}
    ] * 2
    jobs.set_progress(job_id, {"fraction": 0.75, "message": "é" * 100})  # 200 bytes: at the limit, whole
    assert json.loads(progress_events(redis_client, job_id)[1]) == {"fraction": 0.75, "message": "é" * 100}
