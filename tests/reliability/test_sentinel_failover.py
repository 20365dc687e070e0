"""Redis Sentinel with real processes: a primary, a replica and three sentinels; the API (gunicorn) and a train and
an inference worker on `MLQ_REDIS_URL=redis+sentinel://…`. Under a steady load of submissions and predictions the
primary is SIGKILLed: the service continues on the promoted replica, and no acknowledged (202) submission is lost.

What was lost is printed (`-s` shows it): refused requests while there was no primary, and predictions that were
answered by neither side. The cost of WAIT (a submission answered only once the replica has it) is measured here.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import gunicorn
from job_harness import iris_csv
from polling import wait_until
from reliability_support import WorkerFleet
from sentinel_cluster import SentinelCluster

from store import redis_url
from store.jobs import JobStore
from store.settings import Settings

FINAL = ("succeeded", "failed", "cancelled")
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    c = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def train_body(dataset: str) -> dict[str, Any]:
    return {"model": "iris", "dataset": dataset, "target": "species", "algorithm": "logistic_regression"}


class Load:
    """Submissions and predictions from two threads, every outcome recorded with its time."""

    def __init__(self, base: str, dataset: str) -> None:
        self.base = base
        self.dataset = dataset
        self.stop = threading.Event()
        self.submitted: list[tuple[float, int, str | None]] = []  # (time, status, job id when acknowledged)
        self.predicted: list[tuple[float, int]] = []
        self.threads = [threading.Thread(target=self._submit), threading.Thread(target=self._predict)]

    def _call(self, method: str, path: str, body: dict[str, Any]) -> httpx.Response | None:
        try:
            return httpx.request(method, self.base + path, json=body, timeout=15)
        except httpx.TransportError:
            return None

    def _submit(self) -> None:
        while not self.stop.wait(0.2):
            response = self._call("POST", "/v1/jobs/train", train_body(self.dataset))
            status = response.status_code if response is not None else 0
            job = response.json()["id"] if response is not None and status in (200, 202) else None
            self.submitted.append((time.monotonic(), status, job))

    def _predict(self) -> None:
        while not self.stop.wait(0.1):
            response = self._call("POST", "/v1/models/iris/predict?wait=10", {"inputs": [ROW]})
            self.predicted.append((time.monotonic(), response.status_code if response is not None else 0))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def test_the_service_continues_on_the_promoted_replica_and_loses_no_acknowledged_submission(
    cluster: SentinelCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("api")
    home = tmp / "home"
    env = {"MLQ_REDIS_URL": cluster.url, "MLQ_HOME": str(home), "MLQ_HEARTBEAT_S": "0.5", "MLQ_STALE_JOB_S": "3"}
    plain = Settings(redis_url=f"redis://127.0.0.1:{cluster.primary_port}/0", home=home)
    fleet = WorkerFleet(plain, tmp_path_factory.mktemp("worker-logs"))
    try:
        train_worker = fleet.start(["train"], env=env, wait=False)
        inference_worker = fleet.start(["inference"], env=env, wait=False)
        with gunicorn(env, tmp / "gunicorn.log") as base:
            fleet.wait_ready(train_worker)
            fleet.wait_ready(inference_worker)
            run(cluster, base, tmp / "gunicorn.log")
    finally:
        fleet.close()


def run(cluster: SentinelCluster, base: str, log: Path) -> None:
    dataset = httpx.post(base + "/v1/datasets?name=iris", content=iris_csv(), headers={"Content-Type": "text/csv"})
    assert dataset.status_code == 201, dataset.text
    first = httpx.post(base + "/v1/jobs/train?wait=60", json=train_body(dataset.json()["id"]), timeout=90)
    assert first.json()["status"] == "succeeded", first.text
    measure_wait(cluster)
    with Load(base, dataset.json()["id"]) as load:
        time.sleep(5)
        killed_at = time.monotonic()
        cluster.kill_primary()
        wait_until(
            lambda: (
                any(t > killed_at and s == 202 for t, s, _ in load.submitted)
                and any(t > killed_at and s == 200 for t, s in load.predicted)
            ),
            120.0,
            what="submissions and predictions answered again after the failover",
            interval_s=0.2,
        )
        back_at = min(t for t, s, _ in load.submitted if t > killed_at and s == 202)
        time.sleep(5)
    assert cluster.master_port() == cluster.replica_port
    acknowledged = [job for _, s, job in load.submitted if job is not None]
    client = redis_url.client(cluster.url, decode_responses=True)
    jobs = JobStore(client, ttl_s=3600)
    lost = [j for j in acknowledged if jobs.get(j) is None]
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged submissions were lost"

    def status(job_id: str) -> str:
        job = jobs.get(job_id)
        return "gone" if job is None else str(job["status"])

    wait_until(
        lambda: all(status(j) in FINAL for j in acknowledged),
        300.0,
        what="every acknowledged job ended on the new primary",
        interval_s=0.5,
    )
    ended = Counter(status(j) for j in acknowledged)
    sub = Counter(s for _, s, _ in load.submitted)
    pred = Counter(s for _, s in load.predicted)
    print(
        f"\nSentinel failover: service back {back_at - killed_at:.1f} s after the primary was killed; "
        f"submissions by status {dict(sub)}, acknowledged {len(acknowledged)}, lost 0, ended {dict(ended)}; "
        f"predictions by status {dict(pred)}"
    )
    assert set(sub) <= {202, 503, 0}, sub  # refused while there was no primary, never a 500
    assert set(pred) <= {200, 503, 504, 0}, pred
    assert ended == {"succeeded": len(acknowledged)}, ended


def measure_wait(cluster: SentinelCluster) -> None:
    """The cost of WAIT 1 on this machine: a write alone vs a write and WAIT (what a submission adds)."""
    client = redis_url.client(cluster.url, decode_responses=True)
    alone, waited = [], []
    for _ in range(50):
        started = time.perf_counter()
        client.set("probe-alone", "1")
        alone.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert redis_url.replicated(client, 1000) == 1
        waited.append(time.perf_counter() - started)
    print(
        f"\nWAIT 1 cost: a write {statistics.median(alone) * 1000:.2f} ms, a write + WAIT 1 "
        f"{statistics.median(waited) * 1000:.2f} ms (medians of 50)"
    )
