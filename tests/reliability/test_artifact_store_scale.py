"""Scale past one host: the API (gunicorn), train workers and an inference/batch worker share only Redis and an S3
server (rclone serve s3), each with its own empty MLQ_HOME, so nothing can pass through a shared disk. Upload,
train, SIGKILL the training worker mid-run and resume on another host from the checkpoint in the store, promote,
predict, batch-predict and download the output, download the artifact, and two workers registering versions of
one model at the same time get distinct numbers."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from api_reliability_support import gunicorn
from job_harness import breast_cancer_csv
from reliability_support import WorkerFleet, epoch_of, running_at_epoch
from s3_server import RcloneS3
from worker_processes import wait_until_announced

from store.artifacts import S3Store
from store.contract import BATCH_QUEUE, INFERENCE_QUEUE, TRAIN_QUEUE
from store.records import JobRecord
from store.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~1.5 min: five processes start on 2 cores
TIMEOUT_S = 120.0
MLP = {"batch_size": 16, "hidden_layers": [16], "early_stopping_patience": 0}


def wait_until(what: str, probe: Any, timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Cluster:
    """The shared pieces (Redis URL, bucket) and one fresh MLQ_HOME per process started."""

    def __init__(self, settings: Settings, s3: RcloneS3, root: Path, fleet: WorkerFleet) -> None:
        self.bucket = s3.bucket()
        self.store = S3Store(self.bucket, "mlq", s3.endpoint)
        self.env = {"MLQ_REDIS_URL": settings.redis_url, "MLQ_ARTIFACTS": f"s3://{self.bucket}/mlq", **s3.env}
        self.root = root
        self.fleet = fleet
        self.homes: list[Path] = []

    def home(self, name: str) -> dict[str, str]:
        home = self.root / name
        home.mkdir()
        self.homes.append(home)
        return {**self.env, "MLQ_HOME": str(home)}

    def worker(self, name: str, queues: list[str], wait: bool = True) -> Any:
        return self.fleet.start(queues, env=self.home(name), wait=wait)


@pytest.fixture(scope="module")
def cluster(
    chaos_settings: Settings,
    s3_server: RcloneS3,
    fleet: WorkerFleet,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch_module: pytest.MonkeyPatch,
) -> Cluster:
    for name, value in s3_server.env.items():  # for the test's own S3Store (boto3's default chain)
        monkeypatch_module.setenv(name, value)
    return Cluster(chaos_settings, s3_server, tmp_path_factory.mktemp("hosts"), fleet)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def api(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        gunicorn(cluster.home("api"), tmp_path_factory.mktemp("api") / "gunicorn.log") as base,
        httpx.Client(base_url=base, timeout=40) as client,
    ):
        yield client


def job(api: httpx.Client, job_id: str) -> JobRecord:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return cast(JobRecord, response.json())


def finished(api: httpx.Client, job_id: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    found = wait_until(
        f"job {job_id} to finish",
        lambda: (j := job(api, job_id))["status"] in ("succeeded", "failed", "cancelled") and j,
        timeout_s,
    )
    return dict(found)


def train(api: httpx.Client, dataset: str, model: str, algorithm: str, params: dict[str, Any]) -> str:
    body = {"model": model, "dataset": dataset, "target": "diagnosis", "algorithm": algorithm, "params": params}
    response = api.post("/v1/jobs/train", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_no_shared_disk_upload_train_resume_promote_predict_batch_download(cluster: Cluster, api: httpx.Client) -> None:
    upload = api.post("/v1/datasets?name=bc", content=breast_cancer_csv(), headers={"Content-Type": "text/csv"})
    assert upload.status_code == 201, upload.text
    dataset = upload.json()["id"]
    assert cluster.store.keys(f"datasets/default/{dataset}/") == [
        f"datasets/default/{dataset}/data.csv",
        f"datasets/default/{dataset}/meta.json",
    ]

    # One train worker; SIGKILL it mid-run once its checkpoint is in the store.
    first = cluster.worker("train-a", [TRAIN_QUEUE])
    job_id = train(api, dataset, "scale", "mlp", {**MLP, "epochs": 80})
    wait_until("the training past epoch 3", lambda: running_at_epoch(3)(job(api, job_id)))
    wait_until("a checkpoint in the store", lambda: cluster.store.keys(f"checkpoints/{job_id}/latest.json"))
    killed_at = epoch_of(job(api, job_id))
    cluster.fleet.kill(first)

    # Two more train workers on fresh hosts: the sweeper requeues the job and one of them resumes it from S3.
    # The inference worker starts with them (their imports overlap the waits); it has its own empty home too.
    second, third = (cluster.worker(name, [TRAIN_QUEUE], wait=False) for name in ("train-b", "train-c"))
    serving = cluster.worker("infer", [INFERENCE_QUEUE, BATCH_QUEUE], wait=False)
    for started in (second, third):
        wait_until_announced(started, cluster.fleet.liveness)
    done = finished(api, job_id)
    assert (done["status"], done["attempts"]) == ("succeeded", 2), done
    logs = second.log_tail(200_000) + third.log_tail(200_000)  # the API's job view does not name the worker
    assert f"restored checkpoint checkpoints/{job_id}/" in logs, logs[-6000:]
    assert killed_at >= 3 and done["result"]["version"] == 1
    assert cluster.store.keys(f"checkpoints/{job_id}/") == []  # the job ended: its checkpoint went with it

    # Two workers registering versions of one model at the same time: distinct numbers.
    race = [train(api, dataset, "race", "logistic_regression", {}) for _ in range(2)]
    results = [finished(api, j) for j in race]
    assert [r["status"] for r in results] == ["succeeded", "succeeded"], results
    assert sorted(r["result"]["version"] for r in results) == [1, 2]

    # Promote, then predict on an inference worker whose cache is empty: it downloads and verifies v1.
    promoted = api.put("/v1/models/scale/aliases/production", json={"version": 1})
    assert promoted.status_code == 200, promoted.text
    wait_until_announced(serving, cluster.fleet.liveness)
    header, first_row = (line.split(",") for line in breast_cancer_csv().decode().splitlines()[:2])
    row = {k: float(v) for k, v in zip(header, first_row, strict=True) if k != "diagnosis"}
    predicted = api.post("/v1/models/scale/predict?wait=30", json={"inputs": [row]})
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["result"]["version"] == 1 and len(predicted.json()["result"]["predictions"]) == 1

    # Batch prediction on the same worker; the API (another host) serves the output from the store.
    batch = api.post("/v1/models/scale/batch-predict", json={"dataset": dataset})
    assert batch.status_code == 202, batch.text
    batch_job = finished(api, batch.json()["id"])
    assert batch_job["status"] == "succeeded", batch_job
    output = api.get(f"/v1/jobs/{batch_job['id']}/output")
    assert output.status_code == 200, output.text
    assert len(output.content.decode().strip().splitlines()) == upload.json()["rows"] + 1
    assert serving.proc.poll() is None

    # The artifact, as the API (which trained nothing) downloads and verifies it.
    artifact = api.get("/v1/models/scale/versions/1/artifact")
    assert artifact.status_code == 200, artifact.text
    with tarfile.open(fileobj=io.BytesIO(artifact.content), mode="r:gz") as tar:
        assert "scale-1/manifest.json" in tar.getnames()

    # Nothing went through a shared disk: no home holds another's files, and the API kept no upload.
    api_home = cluster.homes[0]
    assert not any((api_home / "datasets").rglob("data.csv"))
    assert not any((api_home / "models").rglob("manifest.json"))
