"""JobStore against a real Redis: atomic transitions, first final status wins, cancel, TTL, listing, wait."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from redis.client import Pipeline

from store import keys
from store.jobs import InvalidCursor, JobConflict, JobStore
from store.lua_loader import outcome
from store.records import JobRecord
from store.script_outcomes import CreateOutcome, FinishOutcome

pytestmark = pytest.mark.integration  # a real Redis (the session's private redis-server)


def present(job: JobRecord | None) -> JobRecord:
    assert job is not None
    return job


def progress(job: JobRecord | None) -> dict[str, Any]:
    assert job is not None and job["progress"] is not None
    return job["progress"]


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, ttl_s=3600)


def test_a_job_goes_queued_running_succeeded_with_timestamps_and_attempts(store: JobStore) -> None:
    job = store.create("t1", "train", "iris", {"a": 1})
    assert job["status"] == "queued" and job["attempts"] == 0 and job["created_at"].endswith("Z")
    assert store.mark_running(job["id"], "w1")
    store.set_progress(job["id"], {"fraction": 0.5, "epoch": 1, "epochs": 2})
    running = present(store.get(job["id"]))
    assert running["status"] == "running" and running["attempts"] == 1 and running["worker"] == "w1"
    assert progress(running)["fraction"] == 0.5 and str(running["started_at"]).endswith("Z")
    assert store.finish(job["id"], "succeeded", result={"version": 1})
    done = present(store.get(job["id"]))
    assert done["status"] == "succeeded" and done["result"] == {"version": 1} and done["finished_at"]
    assert store.public(done)["links"]["self"] == f"/v1/jobs/{job['id']}"
    assert "tenant" not in store.public(done) and "request" not in store.public(done)


def test_only_the_first_final_status_wins(store: JobStore) -> None:
    job = store.create("t1", "train", "iris", {})
    store.mark_running(job["id"], "w1")
    assert store.finish(job["id"], "failed", error={"type": "x", "message": "boom"})
    assert not store.finish(job["id"], "succeeded", result={"version": 1})
    assert not store.mark_running(job["id"], "w2")
    assert present(store.get(job["id"]))["status"] == "failed"
    store.set_progress(job["id"], {"fraction": 0.9})
    assert present(store.get(job["id"]))["progress"] is None


def test_concurrent_finishes_have_exactly_one_winner(store: JobStore, redis_url: str) -> None:
    job = store.create("t1", "train", "iris", {})
    wins: list[bool] = []
    threads = [
        threading.Thread(target=lambda s=s: wins.append(JobStore(redis.Redis.from_url(redis_url)).finish(job["id"], s)))
        for s in ["succeeded", "failed", "cancelled"] * 3
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_a_finished_record_expires_after_the_ttl(store: JobStore, redis_client: redis.Redis) -> None:
    job = store.create("t1", "train", "iris", {})
    assert redis_client.ttl(store.key(job["id"])) == -1  # a queued job never expires
    store.finish(job["id"], "cancelled")
    assert 0 < redis_client.ttl(store.key(job["id"])) <= 3600


def test_a_retried_job_counts_its_attempts(store: JobStore) -> None:
    job = store.create("t1", "train", "iris", {})
    assert store.mark_running(job["id"], "w1")
    assert store.mark_running(job["id"], "w2")  # redelivered after w1 died
    assert present(store.get(job["id"]))["attempts"] == 2


def test_cancelling_a_queued_job_finishes_it_and_the_worker_never_starts_it(store: JobStore) -> None:
    job = store.create("t1", "train", "iris", {})
    assert store.request_cancel(job["id"])["status"] == "cancelled"
    assert not store.mark_running(job["id"], "w1")
    with pytest.raises(JobConflict):
        store.request_cancel(job["id"])


def test_cancelling_a_running_job_raises_the_flag_and_a_restart_then_refuses(store: JobStore) -> None:
    job = store.create("t1", "train", "iris", {})
    store.mark_running(job["id"], "w1")
    assert not store.cancel_requested(job["id"])
    assert store.request_cancel(job["id"])["status"] == "running"
    assert store.cancel_requested(job["id"])
    # A redelivered message after a crash must not run a job whose cancel was asked for.
    assert not store.mark_running(job["id"], "w2")
    assert present(store.get(job["id"]))["status"] == "cancelled"


def test_listing_pages_newest_first_with_filters_and_skips_expired_records(
    store: JobStore, redis_client: redis.Redis
) -> None:
    ids = [store.create("t1", "train" if i % 2 else "predict", f"m{i % 3}", {})["id"] for i in range(7)]
    store.create("t2", "train", "other", {})
    seen, cursor = [], None
    while True:
        page, cursor = store.list("t1", limit=3, cursor=cursor)
        seen += [j["id"] for j in page]
        if cursor is None:
            break
    assert seen == ids[::-1]
    trains, _ = store.list("t1", type="train")
    assert [j["id"] for j in trains] == [i for n, i in enumerate(ids) if n % 2][::-1]
    redis_client.delete(store.key(ids[0]))
    assert ids[0] not in [j["id"] for j in store.list("t1", limit=50)[0]]
    with pytest.raises(InvalidCursor):
        store.list("t1", cursor="bm9wZQ")


def test_wait_wakes_when_another_process_finishes_the_job(store: JobStore, redis_url: str) -> None:
    job = store.create("t1", "predict", "iris", {})

    def finish_later() -> None:
        time.sleep(0.2)  # the scenario: the job ends while wait() is already blocked on it
        JobStore(redis.Redis.from_url(redis_url)).finish(job["id"], "succeeded", result={"ok": True})

    thread = threading.Thread(target=finish_later)
    thread.start()
    waited = store.wait(job["id"], 20)
    thread.join()
    assert waited is not None and waited["status"] == "succeeded"


def test_wait_returns_the_unfinished_job_when_time_runs_out_and_none_for_unknown_ids(store: JobStore) -> None:
    job = store.create("t1", "predict", "iris", {})
    assert present(store.wait(job["id"], 0.2))["status"] == "queued"
    assert store.wait("job_00000000000000000000000000", 0.1) is None
    assert store.get("../../etc/passwd") is None


def test_get_for_hides_other_tenants_jobs(store: JobStore) -> None:
    job = store.create("t1", "train", "iris", {})
    assert present(store.get_for("t1", job["id"]))["id"] == job["id"]
    assert store.get_for("t2", job["id"]) is None


def test_a_running_training_whose_worker_died_reads_as_waiting_for_recovery_and_says_whether_anyone_will(
    store: JobStore,
) -> None:
    from store.leases import Leases
    from store.liveness import WorkerLiveness

    job = store.create("t1", "train", "iris", {})
    token, _ = Leases(store, stale_s=10, max_attempts=3).begin(job["id"], "train-cpu@host")
    assert token is not None
    store.set_progress(job["id"], {"fraction": 0.5, "epoch": 1, "epochs": 2, "message": "epoch 1/2"})
    assert progress(store.get(job["id"]))["message"] == "epoch 1/2"  # its heartbeat is alive
    store.redis.delete(keys.job_heartbeat(job["id"]))  # what expiry does when the worker dies
    orphan = present(store.get(job["id"]))
    assert orphan["status"] == "running" and progress(orphan)["fraction"] == 0.5
    assert progress(orphan)["message"].startswith("waiting for recovery")
    assert "no train worker is alive" in progress(orphan)["message"]
    WorkerLiveness(store.redis).beat("train-cpu@other", ["train"], ttl_s=30)
    assert "will resume it" in progress(store.get(job["id"]))["message"]
    stored = store.redis.hget(store.key(job["id"]), "progress")
    assert isinstance(stored, str) and "waiting" not in stored  # only the view says so; the sweeper decides


# ---- online predictions: create_predict.lua, mark_running.lua and finish_reply.lua, as the inference path runs them


def new_prediction(store: JobStore) -> str:
    record = store.new_record("t1", "predict", "iris", {"inputs": [[1.0]]})
    with store.redis.pipeline(transaction=False) as pipe:
        job = store.create_and_enqueue_in(pipe, record, keys.INFERENCE_STREAM, {"r": b"{}"})
        (created,) = pipe.execute()
    assert outcome(created, CreateOutcome)[0] is CreateOutcome.CREATED
    return str(job["id"])


def answer(store: JobStore, job_id: str, status: str, result: bytes | None = None) -> FinishOutcome:
    (reply,) = store.run_pipeline(lambda pipe: store.finish_and_reply_in(pipe, job_id, status, result=result))
    return outcome(reply, FinishOutcome)[0]


def start(store: JobStore, job_id: str) -> bool:
    (reply,) = store.run_pipeline(lambda pipe: store.mark_running_in(pipe, job_id, "w1"))
    return store.started(reply)


def test_an_answered_prediction_is_finished_and_its_record_pushed_to_the_submitter(store: JobStore) -> None:
    job_id = new_prediction(store)
    assert start(store, job_id) and job_id in store.running_ids()
    assert answer(store, job_id, "succeeded", b'{"predictions": [0]}') is FinishOutcome.DONE
    (pushed,) = store.redis.lrange(store.reply_key(job_id), 0, -1)
    job = store.decode_reply(pushed)
    assert (job["id"], job["status"], job["result"], job["attempts"]) == (job_id, "succeeded", {"predictions": [0]}, 1)
    assert job == store.get(job_id)  # the submitter reads the record as it was written, without reading it again
    assert 0 < store.redis.pttl(store.reply_key(job_id)) <= 60_000  # an unread reply does not stay
    assert job_id not in store.running_ids()
    assert store.metrics()[0][("predict", "succeeded")] == 1
    assert not store.redis.exists(keys.job_log(job_id))  # predictions have no event log: their reply is the answer


def test_an_answer_for_a_prediction_that_already_ended_changes_nothing_and_still_wakes_the_submitter(
    store: JobStore,
) -> None:
    job_id = new_prediction(store)
    assert store.request_cancel(job_id)["status"] == "cancelled"  # cancelled while it waited in the stream
    assert not start(store, job_id)
    assert answer(store, job_id, "succeeded", b'{"predictions": [0]}') is FinishOutcome.ALREADY_FINAL
    (pushed,) = store.redis.lrange(store.reply_key(job_id), 0, -1)
    job = store.decode_reply(pushed)
    assert (job["status"], job["result"], (job["error"] or {}).get("type")) == ("cancelled", None, "cancelled")
    assert store.metrics()[0].get(("predict", "succeeded")) is None


def test_an_answer_for_a_prediction_without_a_record_pushes_nothing(store: JobStore) -> None:
    job_id = new_prediction(store)
    store.redis.delete(store.key(job_id))  # the record expired before the batch was answered
    assert answer(store, job_id, "failed") is FinishOutcome.GONE
    assert not store.redis.exists(store.reply_key(job_id))


def test_a_pipeline_of_scripts_asks_no_script_exists_and_survives_redis_losing_its_scripts(store: JobStore) -> None:
    first, second = new_prediction(store), new_prediction(store)
    assert start(store, first)  # its scripts are loaded now
    store.redis.config_resetstat()
    assert answer(store, first, "succeeded", b"{}") is FinishOutcome.DONE
    calls = store.redis.info("commandstats")
    assert "cmdstat_script|exists" not in calls and calls["cmdstat_evalsha"]["calls"] == 1  # one command, one trip

    store.redis.script_flush()  # what a Redis restart does to the script cache

    def fill(pipe: Pipeline) -> None:
        store.mark_running_in(pipe, second, "w1")
        pipe.incr("probe")

    replies = store.run_pipeline(fill)
    assert store.started(replies[0]) and replies[1] == 2  # sent twice: NOSCRIPT, then loaded and sent again
    assert store.get(second)["attempts"] == 1  # type: ignore[index]  # the script itself ran once
    store.redis.script_flush()
    assert store.finish(second, "succeeded", result={})  # a direct call loads what it lacks as well
