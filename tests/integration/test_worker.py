"""Real workers, real Redis: enqueue by name the way the API does, and check the job records and the registry.

Two worker processes serve the module: one on `train`, one on `inference` with a preloaded model. Models the
inference tests need are trained in this process with the same pipeline before the inference worker starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from job_harness import TENANT, JobHarness, breast_cancer_csv, dump, error_of, iris_csv, progress_of, request_of
from worker_processes import StartWorker, WorkerProcess

from store.contract import (
    INFERENCE_QUEUE,
    TRAIN_QUEUE,
    JobType,
    PredictRequest,
    TrainRequest,
)
from store.ids import new_id
from store.inference_queue import enqueue_in
from store.liveness import WorkerLiveness
from store.settings import Settings
from training.errors import ArtifactTampered, ResourceNotFound
from training.pipeline import train_model
from training.predictors import load_predictor

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 120.0
IRIS_ROWS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5},
]


class Harness(JobHarness):
    """The shared job harness with this module's job shapes (the record keeps the whole request)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, JOB_TIMEOUT_S)

    def train_job(
        self,
        model: str,
        dataset: str,
        target: str,
        algorithm: str,
        params: dict[str, Any] | None = None,
        send: bool = True,
    ) -> str:
        job_id = new_id("job")
        request = TrainRequest(
            job_id=job_id,
            tenant=TENANT,
            model=model,
            dataset_id=dataset,
            target=target,
            algorithm=algorithm,
            params=params or {},
            device="cpu",
        )
        self.jobs.create(TENANT, JobType.TRAIN.value, model, request.encode(), job_id=job_id)
        if send:
            self.send(request.encode())
        return job_id

    def predict_job(
        self, model: str, version: str | int | None, inputs: list[Any], postprocess: dict[str, Any] | None = None
    ) -> str:
        job_id = new_id("job")
        request = PredictRequest(
            job_id=job_id, tenant=TENANT, model=model, version=version, inputs=inputs, postprocess=postprocess or {}
        )
        # As the API does: the record and the stream entry in one MULTI (no Celery task for predictions).
        with self.redis.pipeline(transaction=True) as pipe:
            self.jobs.create(TENANT, JobType.PREDICT.value, model, request.encode(), job_id=job_id, pipe=pipe)
            enqueue_in(pipe, request.encode())
            pipe.execute()
        return job_id


@pytest.fixture(scope="module")
def harness(mlq_settings: Settings) -> Iterator[Harness]:
    h = Harness(mlq_settings)
    yield h
    h.close()


@pytest.fixture(scope="module")
def iris_dataset(harness: Harness) -> str:
    return harness.save_dataset(iris_csv(), "iris")


@pytest.fixture(scope="module")
def train_worker(start_worker: StartWorker) -> WorkerProcess:
    return start_worker([TRAIN_QUEUE])


@pytest.fixture(scope="module")
def inference_worker(start_worker: StartWorker, harness: Harness, iris_dataset: str) -> WorkerProcess:
    """An inference worker preloading `iris-pre`; the models the inference tests use exist before it starts."""
    path = harness.datasets.path(TENANT, iris_dataset)
    for name, versions in (("iris-pre", 1), ("iris-alias", 2), ("iris-cached", 1), ("iris-rows", 1)):
        for _ in range(versions):
            train_model(
                data_path=path,
                target="species",
                algorithm="logistic_regression",
                model_name=name,
                registry=harness.registry,
                dataset_id=iris_dataset,
            )
    harness.registry.set_alias(TENANT, "iris-pre", "production", 1)
    return start_worker([INFERENCE_QUEUE], preload="iris-pre:production")


def test_a_train_job_succeeds_and_registers_version_1_with_its_metrics(
    harness: Harness, train_worker: WorkerProcess, iris_dataset: str
) -> None:
    job_id = harness.train_job("iris-lr", iris_dataset, "species", "logistic_regression")
    job = harness.wait(job_id)
    assert job["status"] == "succeeded", dump(job)
    assert job["result"]["version"] == 1
    assert job["result"]["model"] == "iris-lr"
    assert job["result"]["metrics"]["accuracy"] > 0.7
    assert job["attempts"] == 1
    assert str(job["worker"]).startswith(train_worker.name + "@")
    manifest = harness.registry.manifest(TENANT, "iris-lr", 1)
    assert manifest["job_id"] == job_id
    assert manifest["metrics"] == job["result"]["metrics"]
    assert not (harness.settings.checkpoints_dir / job_id).exists()


def test_an_mlp_job_records_its_progress_up_to_its_last_epoch(harness: Harness, train_worker: WorkerProcess) -> None:
    dataset = harness.save_dataset(breast_cancer_csv(), "breast-cancer")
    params = {"epochs": 4, "hidden_layers": [16], "batch_size": 32, "early_stopping_patience": 0}
    job = harness.wait(harness.train_job("bc-mlp", dataset, "diagnosis", "mlp", params))
    assert job["status"] == "succeeded", dump(job)
    assert job["result"]["epochs_run"] == 4
    progress = progress_of(job)
    assert (progress["epoch"], progress["epochs"], progress["fraction"]) == (4, 4, 1.0)
    assert isinstance(progress["loss"], float) and isinstance(progress["val_loss"], float)
    assert progress["message"]


def test_cancelling_a_running_training_stops_it_with_no_version_registered(
    harness: Harness, train_worker: WorkerProcess
) -> None:
    dataset = harness.save_dataset(breast_cancer_csv(), "breast-cancer-long")
    # Enough epochs that the training is certainly still running when we cancel it.
    params = {"epochs": 1000, "hidden_layers": [32], "batch_size": 4, "early_stopping_patience": 0}
    job_id = harness.train_job("bc-cancelled", dataset, "diagnosis", "mlp", params)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    job = harness.jobs.get(job_id)
    while job is not None and not (job["status"] == "running" and (job["progress"] or {}).get("epoch")):
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, dump(job)
        time.sleep(0.05)
        job = harness.jobs.get(job_id)
    assert job is not None
    # Progress is visible while the training runs.
    assert progress_of(job)["epochs"] == 1000 and 0 < progress_of(job)["fraction"] < 1, dump(job)
    assert progress_of(job)["loss"] is not None
    harness.jobs.request_cancel(job_id)
    job = harness.wait(job_id)
    assert job["status"] == "cancelled", dump(job)
    assert progress_of(job)["epoch"] < 1000
    with pytest.raises(ResourceNotFound):
        harness.registry.get_model(TENANT, "bc-cancelled")
    assert not (harness.settings.checkpoints_dir / job_id).exists()


def test_a_job_cancelled_while_queued_never_starts(
    harness: Harness, train_worker: WorkerProcess, iris_dataset: str
) -> None:
    cancelled = harness.train_job("iris-never", iris_dataset, "species", "logistic_regression", send=False)
    assert harness.jobs.request_cancel(cancelled)["status"] == "cancelled"
    request = request_of(harness.jobs.get(cancelled))
    harness.send(request)  # the message still reaches the worker
    # One worker process takes one message at a time, in order: once the next job ends, the first was seen.
    after = harness.wait(harness.train_job("iris-after", iris_dataset, "species", "logistic_regression"))
    assert after["status"] == "succeeded", dump(after)
    job = harness.jobs.get(cancelled)
    assert job is not None
    assert (job["status"], job["attempts"], job["started_at"]) == ("cancelled", 0, None), dump(job)
    with pytest.raises(ResourceNotFound):
        harness.registry.get_model(TENANT, "iris-never")


def test_training_on_a_dataset_it_cannot_use_fails_with_a_readable_message(
    harness: Harness, train_worker: WorkerProcess, iris_dataset: str
) -> None:
    missing = harness.wait(harness.train_job("iris-bad", iris_dataset, "colour", "logistic_regression"))
    assert missing["status"] == "failed", dump(missing)
    assert error_of(missing)["type"] == "column_not_found"
    assert "colour" in error_of(missing)["message"] and "species" in error_of(missing)["message"]

    one_class = harness.save_dataset(b"x,y\n1,a\n2,a\n3,a\n4,a\n5,a\n6,a\n7,a\n8,a\n9,a\n10,a\n", "one-class")
    job = harness.wait(harness.train_job("one-class", one_class, "y", "logistic_regression"))
    assert job["status"] == "failed", dump(job)
    assert error_of(job)["type"] == "invalid_data"
    assert "'y'" in error_of(job)["message"] or " y " in error_of(job)["message"], dump(job)

    unknown = harness.wait(harness.train_job("iris-x", "ds_" + "0" * 26, "species", "logistic_regression"))
    assert (unknown["status"], error_of(unknown)["type"]) == ("failed", "not_found"), dump(unknown)


def test_the_worker_log_tells_each_job_s_real_outcome_never_succeeded_for_a_failed_or_cancelled_one(
    harness: Harness, train_worker: WorkerProcess, iris_dataset: str
) -> None:
    failed = harness.wait(harness.train_job("iris-log-failed", iris_dataset, "colour", "logistic_regression"))
    cancelled = harness.train_job("iris-log-cancelled", iris_dataset, "species", "logistic_regression", send=False)
    harness.jobs.request_cancel(cancelled)
    harness.send(request_of(harness.jobs.get(cancelled)))
    ok = harness.wait(harness.train_job("iris-log-ok", iris_dataset, "species", "logistic_regression"))
    assert (failed["status"], ok["status"]) == ("failed", "succeeded"), dump(ok)
    # The pool child's log reaches the file in blocks: wait until the last job's line is there.
    deadline = time.monotonic() + 30
    while f"{ok['id']} ended" not in train_worker.log_tail(1_000_000) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = train_worker.log_tail(1_000_000).splitlines()

    def about(job_id: str) -> list[str]:
        return [line for line in lines if job_id in line and "received" not in line]

    assert about(failed["id"]) and not [x for x in about(failed["id"]) if "succeeded" in x], about(failed["id"])
    assert any("ended failed (column_not_found" in x for x in about(failed["id"])), about(failed["id"])
    assert about(cancelled) and not [x for x in about(cancelled) if "succeeded" in x], about(cancelled)
    assert any("ended succeeded" in x for x in about(ok["id"])), about(ok["id"])


def test_the_preloaded_model_is_in_memory_before_the_worker_announces_itself(inference_worker: WorkerProcess) -> None:
    assert inference_worker.first_record["models"] == ["default/iris-pre:1"]
    assert inference_worker.first_record["queues"] == [INFERENCE_QUEUE]
    assert inference_worker.first_record["device"] == "cpu"


def test_a_predict_job_answers_with_labels_and_probabilities(harness: Harness, inference_worker: WorkerProcess) -> None:
    job = harness.wait(harness.predict_job("iris-pre", None, IRIS_ROWS, {"output": "both"}))
    assert job["status"] == "succeeded", dump(job)
    result = job["result"]
    assert (result["model"], result["version"]) == ("iris-pre", 1)
    assert [p["row"] for p in result["predictions"]] == [0, 1, 2]
    assert [p["label"] for p in result["predictions"]] == ["setosa", "virginica", "versicolor"]
    assert all(abs(sum(p["proba"].values()) - 1) < 1e-3 for p in result["predictions"])


def test_a_predict_job_is_answered_from_the_worker_cache(harness: Harness, inference_worker: WorkerProcess) -> None:
    first = harness.wait(harness.predict_job("iris-cached", 1, IRIS_ROWS))
    assert first["status"] == "succeeded", dump(first)
    # Spoil the files on disk: a fresh load now refuses them, so only the loaded copy can answer.
    version_dir = Path(harness.registry.verified_dir(TENANT, "iris-cached", 1))
    for path in version_dir.iterdir():
        if path.name.startswith("model."):
            path.write_bytes(b"spoiled")
    with pytest.raises(ArtifactTampered):
        load_predictor(harness.registry, TENANT, "iris-cached", 1)
    again = harness.wait(harness.predict_job("iris-cached", 1, IRIS_ROWS))
    assert again["status"] == "succeeded", dump(again)
    assert again["result"]["predictions"] == first["result"]["predictions"]


def test_an_alias_moved_in_the_registry_is_served_without_a_restart(
    harness: Harness, inference_worker: WorkerProcess
) -> None:
    harness.registry.set_alias(TENANT, "iris-alias", "production", 1)
    before = harness.wait(harness.predict_job("iris-alias", "production", IRIS_ROWS))
    assert (before["status"], before["result"]["version"]) == ("succeeded", 1), dump(before)
    harness.registry.set_alias(TENANT, "iris-alias", "production", 2)
    after = harness.wait(harness.predict_job("iris-alias", "production", IRIS_ROWS))
    assert (after["status"], after["result"]["version"]) == ("succeeded", 2), dump(after)
    assert inference_worker.proc.poll() is None
    records = WorkerLiveness(harness.redis).workers()
    pids = [r["pid"] for r in records if r["hostname"].startswith(inference_worker.name + "@")]
    assert pids == [inference_worker.first_record["pid"]]


def test_predicting_with_an_unknown_model_fails_with_not_found(
    harness: Harness, inference_worker: WorkerProcess
) -> None:
    job = harness.wait(harness.predict_job("no-such-model", None, IRIS_ROWS))
    assert job["status"] == "failed", dump(job)
    assert error_of(job)["type"] == "not_found"
    assert "no-such-model" in error_of(job)["message"]


def test_a_predict_job_with_a_bad_row_fails_naming_the_row_and_the_column(
    harness: Harness, inference_worker: WorkerProcess
) -> None:
    rows = [IRIS_ROWS[0], {"sepal_length": 5.0, "sepal_width": 3.0, "petal_length": 1.0}]
    job = harness.wait(harness.predict_job("iris-rows", 1, rows))
    assert job["status"] == "failed", dump(job)
    assert error_of(job)["type"] == "invalid_input"
    assert error_of(job)["errors"][0]["loc"] == ["inputs", 1, "petal_width"]


def test_the_workers_report_which_queues_they_serve(
    harness: Harness, train_worker: WorkerProcess, inference_worker: WorkerProcess
) -> None:
    counts = WorkerLiveness(harness.redis).counts()
    assert counts == {TRAIN_QUEUE: 1, INFERENCE_QUEUE: 1}


def test_the_launcher_runs_a_worker_per_device_and_stops_it_on_sigterm(
    harness: Harness, mlq_settings: Settings
) -> None:
    env = {
        **os.environ,
        "MLQ_REDIS_URL": mlq_settings.redis_url,
        "MLQ_HOME": str(mlq_settings.home),
        "MLQ_HEARTBEAT_S": "0.5",
    }
    code = "import sys; from worker.launcher import run; sys.exit(run(['inference'], devices='cpu'))"
    launcher = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    liveness = WorkerLiveness(harness.redis)
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not [r for r in liveness.workers() if r["hostname"].startswith("inference-cpu@")]:
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[0][-4000:]
            time.sleep(0.1)
        (record,) = [r for r in liveness.workers() if r["hostname"].startswith("inference-cpu@")]
        assert (record["device"], record["queues"]) == ("cpu", [INFERENCE_QUEUE])
        launcher.send_signal(signal.SIGTERM)
        output = launcher.communicate(timeout=60)[0]
        assert launcher.returncode == 0, output[-4000:]
        # The worker removed its liveness key on the way out: /readyz stops counting it at once.
        assert not [r for r in liveness.workers() if r["hostname"].startswith("inference-cpu@")]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
