"""What the API does, minus HTTP, for tests that drive real workers: datasets, job records, tasks sent by name.

Shared by tests/integration/test_worker.py and the chaos tests in tests/reliability/, which add their own job
shapes and waits on top.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import redis
from sklearn.datasets import load_breast_cancer, load_iris

from store.celery_config import make_celery
from store.contract import TRAIN_QUEUE, TRAIN_TASK
from store.datasets import DatasetStore
from store.jobs import JobStore
from store.records import JobRecord
from store.settings import Settings
from training.registry import ModelRegistry

TENANT = "default"


def dump(job: Any) -> str:
    return json.dumps(job, indent=1, default=str)


def present(job: JobRecord | None) -> JobRecord:
    """A job the test knows exists."""
    assert job is not None
    return job


def error_of(job: JobRecord | None) -> dict[str, Any]:
    """The error of a job the test knows failed (or was cancelled)."""
    assert job is not None and job["error"] is not None, dump(job)
    return job["error"]


def progress_of(job: JobRecord | None) -> dict[str, Any]:
    """The progress of a job the test knows has reported some."""
    assert job is not None and job["progress"] is not None, dump(job)
    return job["progress"]


def request_of(job: JobRecord | None) -> dict[str, Any]:
    """The request kept on a job's record."""
    assert job is not None and job["request"] is not None, dump(job)
    return job["request"]


def iris_csv() -> bytes:
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame["species"] = iris.target_names[iris.target]
    csv: str = frame.to_csv(index=False)
    return csv.encode()


def breast_cancer_csv() -> bytes:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target").iloc[:, :8]  # a few features are plenty for a tiny MLP
    frame.columns = [f"f{i}" for i in range(frame.shape[1])]
    frame["diagnosis"] = np.where(data.target == 0, "malignant", "benign")
    csv: str = frame.to_csv(index=False)
    return csv.encode()


class JobHarness:
    """The stores and the Celery app of `settings`; jobs are waited on through their records, never polled."""

    def __init__(self, settings: Settings, job_timeout_s: float) -> None:
        self.settings = settings
        self.job_timeout_s = job_timeout_s
        self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.jobs = JobStore(self.redis, ttl_s=settings.job_ttl_s)
        self.datasets = DatasetStore(settings.datasets_dir)
        self.registry = ModelRegistry(settings.models_dir, secret_key=settings.secret_key)
        self.celery = make_celery(settings)

    def save_dataset(self, csv: bytes, name: str) -> str:
        dataset_id: str = self.datasets.save(TENANT, io.BytesIO(csv), name, max_bytes=10**7)["id"]
        return dataset_id

    def send(self, payload: dict[str, Any]) -> None:
        """Send a train message by name, as the API (or Celery's own redelivery) does."""
        self.celery.send_task(TRAIN_TASK, args=[payload], task_id=payload["job_id"], queue=TRAIN_QUEUE)

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobRecord:
        job = self.jobs.wait(job_id, self.job_timeout_s if timeout_s is None else timeout_s)
        assert job is not None and job["status"] in ("succeeded", "failed", "cancelled"), dump(job)
        return job

    def close(self) -> None:
        self.celery.close()
        self.redis.close()
