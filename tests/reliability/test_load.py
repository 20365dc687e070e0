"""1,000 concurrent job submissions against the API under a real gunicorn on loopback, with a real train worker:
every answer is 202 or 429 (MLQ_MAX_ACTIVE_JOBS is low on purpose), never a 5xx or a transport error, and
every accepted job reaches a final state (the ones still queued after the burst are cancelled; the rest run).
The tenant's active-job counter is back to 0 at the end."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from api_reliability_support import gunicorn

from store.jobs import JobStore
from store.settings import Settings

SUBMISSIONS = 1000
THREADS = 50
MAX_ACTIVE = 25
FINAL = {"succeeded", "failed", "cancelled"}


def small_csv() -> bytes:
    """90 rows, 3 well separated classes: a logistic regression trains in a few milliseconds."""
    lines = ["x1,x2,label"]
    for i in range(90):
        k = i % 3
        lines.append(f"{k * 3 + (i % 7) * 0.1:.2f},{k * -2 + (i % 5) * 0.1:.2f},c{k}")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.slow
def test_a_thousand_concurrent_submissions_end_in_202_or_429_and_every_accepted_job_ends(
    private_redis: Any, chaos_settings: Settings, fleet: Any, tmp_path: Path
) -> None:
    worker = fleet.start(["train"], wait=False)  # it boots (imports torch) while gunicorn starts
    env = {
        "MLQ_REDIS_URL": private_redis.url,
        "MLQ_HOME": str(chaos_settings.home),
        "MLQ_MAX_ACTIVE_JOBS": str(MAX_ACTIVE),
    }
    with (
        gunicorn(env, tmp_path / "gunicorn.log") as base,
        httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=THREADS)) as http,
    ):
        fleet.wait_ready(worker)
        upload = http.post("/v1/datasets", content=small_csv(), headers={"Content-Type": "text/csv"})
        assert upload.status_code == 201, upload.text
        body = {
            "model": "load",
            "dataset": upload.json()["id"],
            "target": "label",
            "algorithm": "logistic_regression",
            "params": {"max_iter": 50},
        }

        def submit(_: int) -> tuple[int, str | None, str | None]:
            try:
                response = http.post("/v1/jobs/train", json=body)
            except httpx.TransportError as exc:
                return -1, None, type(exc).__name__
            job_id = response.json().get("id") if response.status_code == 202 else None
            return response.status_code, job_id, response.headers.get("Retry-After")

        started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(submit, range(SUBMISSIONS)))
        burst_s = time.monotonic() - started
        codes = Counter(code for code, _, _ in results)
        print(f"\n{SUBMISSIONS} submissions in {burst_s:.1f} s: {dict(codes)}")
        assert set(codes) <= {202, 429}, codes
        assert codes[202] >= 1
        assert all(retry for code, _, retry in results if code == 429)  # every 429 says when to come back
        accepted = [job_id for code, job_id, _ in results if code == 202 and job_id is not None]
        assert len(set(accepted)) == len(accepted)

        # Let the worker run what it can for a moment, then cancel whatever still waits in the queue.
        time.sleep(3)  # the scenario: the worker runs what it can for a moment before the cancels
        for job_id in accepted:
            response = http.post(f"/v1/jobs/{job_id}/cancel")
            assert response.status_code in (202, 409), response.text

        deadline = time.monotonic() + 60
        pending = set(accepted)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                if http.get(f"/v1/jobs/{job_id}").json()["status"] in FINAL:
                    pending.discard(job_id)
            time.sleep(0.5)
        assert not pending, f"{len(pending)} accepted jobs never ended, e.g. {sorted(pending)[:3]}"
        statuses = Counter(http.get(f"/v1/jobs/{j}").json()["status"] for j in accepted)
        print(f"accepted jobs ended as {dict(statuses)}")

    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    assert JobStore(client).active_count("default") == 0
    assert client.llen("train") == 0 or statuses["cancelled"] >= 1  # what is left are cancelled jobs' messages
    client.close()
