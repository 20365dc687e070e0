"""A batch prediction whose worker is SIGKILLed mid-job resumes on another worker from its last chunk, and its
output still holds every row exactly once, in order. Real `celery worker` subprocesses on a private Redis."""

from __future__ import annotations

import csv
import io
import signal
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from reliability_support import TENANT, ChaosHarness, WorkerFleet, dump

from store.contract import BATCH_PREDICT_TASK, BATCH_QUEUE, BatchPredictRequest
from store.ids import new_id
from store.records import JobRecord
from training.pipeline import train_model

pytestmark = pytest.mark.integration
ROWS = 40_000
SMALL_CHUNKS = {"MLQ_BATCH_CHUNK_ROWS": "500"}  # 80 chunks: the kill lands mid-job


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, 3)), 3)
    out = pd.DataFrame(x, columns=["a", "b", "c"])
    out.insert(0, "id", np.arange(n))
    out["y"] = np.where(x[:, 0] - x[:, 1] > 0, "yes", "no")
    return out


def rows_done(job: Mapping[str, Any]) -> int:
    return int((job.get("progress") or {}).get("rows_done") or 0)


@pytest.fixture(scope="module")
def dataset(harness: ChaosHarness) -> str:
    """A logistic regression `kill-lr` and a dataset of ROWS rows to score with it."""
    staging = harness.settings.home / "train-kill.csv"
    frame(400, 1).to_csv(staging, index=False)
    train_model(
        data_path=staging,
        target="y",
        algorithm="logistic_regression",
        model_name="kill-lr",
        registry=harness.registry,
        features=["a", "b", "c"],
    )
    return harness.save_dataset(frame(ROWS, 2).drop(columns="y").to_csv(index=False).encode(), "kill")


def batch_job(harness: ChaosHarness, dataset: str) -> str:
    """A batch prediction recorded as the API records it and sent by name."""
    job_id = new_id("job")
    request = BatchPredictRequest(
        job_id=job_id, tenant=TENANT, model="kill-lr", version=1, dataset_id=dataset, columns=["id"]
    ).encode()
    harness.jobs.create(
        TENANT,
        "batch_predict",
        "kill-lr",
        {k: v for k, v in request.items() if k not in ("job_id", "tenant")},
        job_id=job_id,
    )
    harness.celery.send_task(BATCH_PREDICT_TASK, args=[request], task_id=job_id, queue=BATCH_QUEUE)
    return job_id


def every_row_once(harness: ChaosHarness, job: JobRecord) -> None:
    output = harness.settings.outputs_dir / job["id"] / job["result"]["output"]["filename"]
    rows = list(csv.reader(io.StringIO(output.read_text())))
    assert [int(r[0]) for r in rows[1:]] == list(range(ROWS))  # every row exactly once, in order
    assert job["result"]["rows"] == ROWS and job["result"]["rows_failed"] == 0
    assert not (harness.settings.checkpoints_dir / job["id"]).exists()


def test_a_sigkilled_batch_worker_s_job_resumes_and_the_output_has_every_row_once(
    harness: ChaosHarness, fleet: WorkerFleet, dataset: str
) -> None:
    first = fleet.start([BATCH_QUEUE], env=SMALL_CHUNKS)
    job_id = batch_job(harness, dataset)
    harness.wait_for(job_id, lambda j: j["status"] == "running" and rows_done(j) >= 2000, what="a few chunks")
    fleet.kill(first)  # main process and pool child, no goodbye
    killed_at = rows_done(harness.jobs.get(job_id) or {})
    assert killed_at < ROWS, "the job ended before the kill; make it longer"

    second = fleet.start([BATCH_QUEUE], env=SMALL_CHUNKS)
    seen: list[int] = []  # rows done as the second attempt reports them
    deadline = time.monotonic() + 90
    while True:
        current: Mapping[str, Any] = harness.jobs.get(job_id) or {}
        if current.get("attempts") == 2 and current.get("status") == "running" and current.get("progress"):
            seen.append(rows_done(current))
        if current.get("status") in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, dump(current)
        time.sleep(0.01)
    job = harness.wait(job_id)
    assert job["status"] == "succeeded", dump(job) + second.log_tail()
    assert job["attempts"] == 2 and str(job["worker"]).startswith(second.name + "@")
    assert seen and min(seen) >= killed_at, (killed_at, seen[:3])  # resumed from its checkpoint, not row 0
    every_row_once(harness, job)
    fleet.stop(second)


def test_sigterm_requeues_a_running_batch_job_with_its_checkpoint_and_the_next_worker_finishes_it(
    harness: ChaosHarness, fleet: WorkerFleet, dataset: str
) -> None:
    worker = fleet.start([BATCH_QUEUE], env={**SMALL_CHUNKS, "MLQ_SHUTDOWN_GRACE_S": "0"})
    job_id = batch_job(harness, dataset)
    harness.wait_for(job_id, lambda j: j["status"] == "running" and rows_done(j) >= 1000, what="a few chunks")
    worker.proc.send_signal(signal.SIGTERM)  # docker stop: no grace left, so it stops at the next chunk
    assert worker.proc.wait(timeout=30) == 0, worker.log_tail()
    job = harness.jobs.get(job_id)
    assert job is not None and job["status"] == "queued", dump(job)
    assert harness.redis.hget(harness.jobs.key(job_id), "preempted") == "1"
    assert (harness.settings.checkpoints_dir / job_id / "checkpoint.json").exists()  # kept for the next attempt
    assert harness.redis.llen(BATCH_QUEUE) == 1  # re-sent by name at once
    stopped_at = rows_done(job)

    nxt = fleet.start([BATCH_QUEUE], env=SMALL_CHUNKS)
    resumed = harness.wait_for(
        job_id, lambda j: j["attempts"] == 2 and j["status"] in ("running", "succeeded"), what="the second attempt"
    )
    assert rows_done(resumed) >= stopped_at, dump(resumed)
    job = harness.wait(job_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 2), dump(job) + nxt.log_tail()
    every_row_once(harness, job)
