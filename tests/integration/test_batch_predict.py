"""Batch prediction end to end: the Flask app, a real `batch` worker process (and an inference worker for the
online-latency test), real Redis. A 200,000-row CSV is generated here and scored with a small logistic regression.

Numbers that depend on this machine (peak memory, latency percentiles) are printed (`pytest -s`) and asserted only
with bounds far from what is measured, never as exact timings.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from flask.testing import FlaskClient
from job_harness import error_of, progress_of

from api import create_app
from store.contract import BATCH_QUEUE, INFERENCE_QUEUE
from store.jobs import JobStore
from store.records import JobRecord
from store.settings import Settings
from training.pipeline import train_model
from training.predictors import load_predictor
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
MODEL = "bp-lr"
FEATURES = ["x0", "x1", "x2", "x3", "site"]
BIG_ROWS = 200_000
CHUNK_ROWS = "5000"  # the batch worker's MLQ_BATCH_CHUNK_ROWS: 40 chunks for the big file
WAIT = {"Prefer": "wait=30"}


def synthetic(n: int, seed: int) -> pd.DataFrame:
    """Four numbers and a category; three classes that a linear model separates well."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, 4)), 4)
    site = rng.choice(["north", "south", "east"], size=n)
    score = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + (site == "north") * 0.8
    frame = pd.DataFrame(x, columns=FEATURES[:4])
    frame.insert(0, "id", np.arange(n))
    frame["site"] = site
    frame["label"] = np.where(score < -0.5, "low", np.where(score < 0.5, "mid", "high"))
    return frame


@pytest.fixture(scope="module")
def data(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("batch-data")
    registry = ModelRegistry(mlq_settings.models_dir, secret_key=mlq_settings.secret_key)
    synthetic(3000, seed=1).to_csv(tmp / "train.csv", index=False)
    train_model(
        data_path=tmp / "train.csv",
        target="label",
        algorithm="logistic_regression",
        model_name=MODEL,
        registry=registry,
        features=FEATURES,
    )
    big = synthetic(BIG_ROWS, seed=2).drop(columns="label")
    big.to_csv(tmp / "big.csv", index=False)
    return {"tmp": tmp, "registry": registry, "big": tmp / "big.csv", "big_frame": big}


@pytest.fixture(scope="module")
def app(mlq_settings: Settings) -> FlaskClient:
    return create_app(mlq_settings).test_client()


@pytest.fixture(scope="module")
def store(mlq_settings: Settings) -> Iterator[JobStore]:
    client = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    yield JobStore(client)
    client.close()


@pytest.fixture(scope="module")
def batch_worker(start_worker: Any, data: dict[str, Any]) -> Any:
    saved = os.environ.get("MLQ_BATCH_CHUNK_ROWS")
    os.environ["MLQ_BATCH_CHUNK_ROWS"] = CHUNK_ROWS
    try:
        return start_worker([BATCH_QUEUE])
    finally:
        if saved is None:
            os.environ.pop("MLQ_BATCH_CHUNK_ROWS", None)
        else:
            os.environ["MLQ_BATCH_CHUNK_ROWS"] = saved


@pytest.fixture(scope="module")
def big_dataset(app: FlaskClient, data: dict[str, Any]) -> str:
    return upload(app, data["big"].read_bytes(), "big")


def upload(app: FlaskClient, body: bytes, name: str) -> str:
    response = app.post(f"/v1/datasets?name={name}", data=body, content_type="text/csv")
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def submit(app: FlaskClient, dataset: str, **options: Any) -> dict[str, Any]:
    response = app.post(f"/v1/models/{MODEL}/batch-predict", json={"dataset": dataset, **options})
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{response.get_json()['id']}"
    return dict(response.get_json())


def rows_done(job: JobRecord | None) -> int:
    progress = job["progress"] if job is not None else None
    return int((progress or {}).get("rows_done", 0))


def finished(store: JobStore, job_id: str, timeout_s: float = 180) -> JobRecord:
    job = store.wait(job_id, timeout_s)
    assert job is not None and job["status"] in ("succeeded", "failed", "cancelled"), job
    return job


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


WHOLE_FILE = """
import sys
import pandas as pd
def hwm():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
before = hwm()
frame = pd.read_csv(sys.argv[1])
print(hwm() - before)
"""


def test_a_200000_row_dataset_is_scored_in_order_in_bounded_memory_and_downloads_as_csv(
    app: FlaskClient, store: JobStore, batch_worker: Any, big_dataset: str, data: dict[str, Any]
) -> None:
    # Warm up the worker on a file of a few chunks (imports, model load, one chunk's buffers), then measure what
    # scoring the big file adds to its peak: with bounded memory, about nothing, whatever the file's length.
    head = b"".join(data["big"].open("rb").readlines()[: 3 * int(CHUNK_ROWS) + 1])
    small = upload(app, head, "small")
    assert finished(store, submit(app, small)["id"])["status"] == "succeeded"
    pid = int(batch_worker.first_record["pid"])
    before = vm_hwm_kib(pid)

    job = finished(store, submit(app, big_dataset, columns=["id"])["id"])
    assert job["status"] == "succeeded", job
    grown = vm_hwm_kib(pid) - before
    whole = int(
        subprocess.run(
            [sys.executable, "-c", WHOLE_FILE, str(data["big"])], capture_output=True, text=True, check=True
        ).stdout
    )
    size_kib = data["big"].stat().st_size // 1024
    print(
        f"\nbatch worker peak memory (VmHWM {before} KiB after a 3-chunk warm-up) grew {grown} KiB scoring "
        f"a {size_kib} KiB CSV ({BIG_ROWS} rows, chunks of "
        f"{CHUNK_ROWS}) in {job['result']['duration_s']} s; pandas.read_csv of the whole file alone grows the "
        f"peak by {whole} KiB"
    )
    assert grown < whole / 2, (grown, whole)

    result = job["result"]
    assert (result["rows"], result["rows_scored"], result["rows_failed"]) == (BIG_ROWS, BIG_ROWS, 0)
    assert progress_of(job)["rows_done"] == BIG_ROWS and progress_of(job)["fraction"] == 1.0
    response = app.get(f"/v1/jobs/{job['id']}/output")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert int(response.headers["Content-Length"]) == len(response.data) == result["output"]["size_bytes"]
    name = f"{MODEL}-v1-{job['id']}.csv"
    assert response.headers["Content-Disposition"] == f"attachment; filename={name}"
    rows = list(csv.reader(io.StringIO(response.data.decode())))
    assert rows[0] == ["id", "label", "proba_high", "proba_low", "proba_mid", "error"]
    assert [int(r[0]) for r in rows[1:]] == list(range(BIG_ROWS))  # every row once, in input order
    predictor = load_predictor(data["registry"], "default", MODEL, 1)
    sample = np.random.default_rng(0).choice(BIG_ROWS, size=300, replace=False)
    frame = data["big_frame"]
    online = predictor.predict(frame.loc[sample, FEATURES].values.tolist(), {"output": "both"})
    for i, want in zip(sample, online, strict=True):
        got = rows[i + 1]
        assert got[1] == want["label"] and got[5] == ""
        assert [float(v) for v in got[2:5]] == pytest.approx(
            [want["proba"][c] for c in ("high", "low", "mid")], abs=1.1e-6
        )


def test_unscorable_rows_get_an_error_and_formula_cells_are_escaped(
    app: FlaskClient, store: JobStore, batch_worker: Any
) -> None:
    text = (
        "id,note,x0,x1,x2,x3,site\n"
        '1,=HYPERLINK("http://evil"),0.1,0.2,0.3,0.4,north\n'
        "2,@SUM(A1),abc,0.2,0.3,0.4,south\n"
        "3,-2+3,0.5,,0.1,-1.5,\n"
        "4,plain,0.5,0.1,inf,0.2,east\n"
    )
    job = finished(
        store,
        submit(app, upload(app, text.encode(), "messy"), columns=["id", "note"], postprocess={"output": "label"})["id"],
    )
    assert job["status"] == "succeeded", job
    assert (job["result"]["rows"], job["result"]["rows_scored"], job["result"]["rows_failed"]) == (4, 2, 2)
    assert job["result"]["first_error"] == {"row": 1, "error": "feature 'x0': expected a number, got 'abc'"}
    body = app.get(f"/v1/jobs/{job['id']}/output").data.decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["id", "note", "label", "error"]
    assert [r[1] for r in rows[1:]] == ['\'=HYPERLINK("http://evil")', "'@SUM(A1)", "'-2+3", "plain"]
    assert rows[1][2] in ("low", "mid", "high") and rows[3][2] in ("low", "mid", "high")  # gaps are imputed
    assert rows[2][2:] == ["", "feature 'x0': expected a number, got 'abc'"]
    assert rows[4][2:] == ["", "feature 'x2': expected a finite number, got 'inf'"]


def test_a_job_whose_every_row_fails_ends_failed_without_output(
    app: FlaskClient, store: JobStore, batch_worker: Any
) -> None:
    text = "x0,x1,x2,x3,site\nn/a?,1,1,1,north\nzero,1,1,1,south\n"
    job = finished(store, submit(app, upload(app, text.encode(), "hopeless"))["id"])
    assert job["status"] == "failed" and error_of(job)["type"] == "all_rows_failed", job
    assert "none of the 2 rows could be scored" in error_of(job)["message"]
    response = app.get(f"/v1/jobs/{job['id']}/output")
    assert response.status_code == 409 and "ended failed" in response.get_json()["detail"]


def test_cancel_mid_job_stops_after_the_current_chunk_and_keeps_no_output(
    app: FlaskClient, store: JobStore, batch_worker: Any, big_dataset: str, mlq_settings: Settings
) -> None:
    job_id = submit(app, big_dataset)["id"]
    deadline = time.monotonic() + 120
    while rows_done(store.get(job_id)) < 5000:  # one chunk done
        assert time.monotonic() < deadline, store.get(job_id)
        time.sleep(0.01)
    assert app.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = finished(store, job_id)
    assert job["status"] == "cancelled", job
    assert progress_of(job)["rows_done"] < BIG_ROWS
    assert app.get(f"/v1/jobs/{job_id}/output").status_code == 409
    assert not (mlq_settings.outputs_dir / job_id).exists()
    assert not (mlq_settings.checkpoints_dir / job_id).exists()


def test_another_tenant_gets_404_on_the_output(
    mlq_settings: Settings, store: JobStore, batch_worker: Any, data: dict[str, Any]
) -> None:
    import dataclasses

    tokens = {"tok-alice": "alice", "tok-bob": "bob"}
    client = create_app(dataclasses.replace(mlq_settings, auth_tokens=tokens)).test_client()
    alice, bob = {"Authorization": "Bearer tok-alice"}, {"Authorization": "Bearer tok-bob"}
    staging = data["tmp"] / "alice-train.csv"
    synthetic(500, seed=3).to_csv(staging, index=False)
    train_model(
        data_path=staging,
        target="label",
        algorithm="logistic_regression",
        model_name=MODEL,
        registry=data["registry"],
        tenant="alice",
        features=FEATURES,
    )
    response = client.post(
        "/v1/datasets", data=synthetic(50, seed=4).to_csv(index=False).encode(), content_type="text/csv", headers=alice
    )
    dataset = response.get_json()["id"]
    response = client.post(
        f"/v1/models/{MODEL}/batch-predict", json={"dataset": dataset, "format": "parquet"}, headers=alice
    )
    assert response.status_code == 202, response.get_json()
    job = finished(store, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    mine = client.get(f"/v1/jobs/{job['id']}/output", headers=alice)
    assert mine.status_code == 200 and mine.mimetype == "application/vnd.apache.parquet"
    assert len(pd.read_parquet(io.BytesIO(mine.data))) == 50
    theirs = client.get(f"/v1/jobs/{job['id']}/output", headers=bob)
    assert theirs.status_code == 404 and theirs.content_type == "application/problem+json"
    assert (
        client.post(f"/v1/models/{MODEL}/batch-predict", json={"dataset": dataset}, headers=bob).status_code == 404
    )  # nor her dataset (bob has no such model either)


def test_online_predictions_keep_answering_while_a_large_batch_job_runs(
    app: FlaskClient, store: JobStore, start_worker: Any, batch_worker: Any, big_dataset: str, data: dict[str, Any]
) -> None:
    start_worker([INFERENCE_QUEUE])
    frame = data["big_frame"]
    rng = np.random.default_rng(5)

    def ask(i: int) -> tuple[float, dict[str, Any]]:
        row = frame.loc[i, FEATURES].tolist()
        started = time.perf_counter()
        response = app.post(
            f"/v1/models/{MODEL}/predict", headers=WAIT, json={"inputs": [row], "postprocess": {"output": "both"}}
        )
        elapsed = time.perf_counter() - started
        job = response.get_json()
        assert response.status_code == 200 and job["status"] == "succeeded", job["error"]
        return elapsed, job["result"]["predictions"][0]

    for i in range(20):  # warm-up: model load, connections
        ask(i)
    idle = [ask(int(i))[0] for i in rng.choice(BIG_ROWS, size=150)]
    job_id = submit(app, big_dataset, columns=["id"], format="parquet")["id"]
    busy: list[float] = []
    answers: dict[int, dict[str, Any]] = {}
    while True:
        job: Mapping[str, Any] = store.get(job_id) or {}
        if job.get("status") != "running" and busy:
            break
        i = int(rng.integers(BIG_ROWS))
        elapsed, answers[i] = ask(i)
        if job.get("status") == "running":
            busy.append(elapsed)
    job = finished(store, job_id)
    assert job["status"] == "succeeded", job
    p99_idle, p99_busy = np.percentile(idle, 99), np.percentile(busy, 99)
    print(
        f"\nonline predict p50/p99: idle {np.median(idle) * 1000:.1f}/{p99_idle * 1000:.1f} ms, while a "
        f"{BIG_ROWS}-row batch job ran {np.median(busy) * 1000:.1f}/{p99_busy * 1000:.1f} ms "
        f"({len(busy)} requests, p99 ratio {p99_busy / p99_idle:.2f})"
    )
    assert len(busy) >= 20
    # The target is a p99 within 2x of idle; on a shared 2-core machine the bound asserted is looser.
    assert p99_busy < max(4 * p99_idle, p99_idle + 0.25)

    output = pd.read_parquet(io.BytesIO(app.get(f"/v1/jobs/{job_id}/output").data))
    assert output["id"].tolist() == [str(i) for i in range(BIG_ROWS)]
    for i, want in answers.items():
        assert output.at[i, "label"] == want["label"]
        assert [output.at[i, f"proba_{c}"] for c in ("high", "low", "mid")] == pytest.approx(
            [want["proba"][c] for c in ("high", "low", "mid")], abs=1.1e-6
        )


@pytest.fixture(scope="module")
def http_url(mlq_settings: Settings) -> Iterator[str]:
    """The app served over real HTTP (werkzeug, threaded) for the client and `mlq` to talk to."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, create_app(mlq_settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def test_mlq_batch_predict_uploads_runs_follows_and_downloads(
    http_url: str, batch_worker: Any, data: dict[str, Any]
) -> None:
    source = data["tmp"] / "cli.csv"
    synthetic(3000, seed=6).drop(columns="label").to_csv(source, index=False)
    out = data["tmp"] / "cli-predictions.csv"
    env = {**os.environ, "MLQ_URL": http_url}
    env.pop("MLQ_TOKEN", None)
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlq"),
            "batch-predict",
            MODEL,
            "--data",
            str(source),
            "--out",
            str(out),
            "--columns",
            "id",
            "--output",
            "label",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "uploaded" in done.stderr and f"wrote {out}" in done.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "label", "error"] and [int(r[0]) for r in rows[1:]] == list(range(3000))
    assert json_result(done.stdout)["rows_scored"] == 3000


def json_result(stdout: str) -> dict[str, Any]:
    return dict(json.loads(stdout))


def test_the_client_scores_a_dataset_and_downloads_parquet(
    http_url: str, batch_worker: Any, data: dict[str, Any]
) -> None:
    from mlqueue import Client, Conflict

    with Client(http_url) as client:
        dataset = client.upload_dataset(
            synthetic(1000, seed=7).drop(columns="label").to_csv(index=False).encode(), name="client"
        )
        job = client.batch_predict(MODEL, dataset["id"], columns=["id"], format="parquet")
        result = client.result(job["id"], timeout=120)
        hopeless = client.upload_dataset(b"x0,x1,x2,x3,site\nzero,1,1,1,north\n", name="hopeless-client")
        failed = client.wait(client.batch_predict(MODEL, hopeless["id"])["id"], timeout=120)
        assert failed["status"] == "failed"
        with pytest.raises(Conflict):  # a failed job has no output: nothing is written, not even a part
            client.download_output(failed["id"], data["tmp"] / "failed.parquet")
        assert not list(data["tmp"].glob("failed.parquet*"))
        path = client.download_output(job["id"], data["tmp"] / "client.parquet")
    frame = pd.read_parquet(path)
    assert len(frame) == result["rows"] == 1000 and frame["id"].tolist() == [str(i) for i in range(1000)]
    assert list(frame.columns) == ["id", "label", "proba_high", "proba_low", "proba_mid", "error"]
