"""The benchmark's models, trained THROUGH the service, and the in-process workloads W2 and W3."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

from training.predictors import load_predictor

# name: (features, hidden layers, classes, rows, epochs)
MODELS = {"mlp32": (32, [256, 256], 2, 10_000, 3), "mlp-wide": (256, [2048, 2048], 16, 4_000, 2)}


def dataset(features: int, classes: int, rows: int) -> pd.DataFrame:
    X, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=min(features, 16),
        n_classes=classes,
        n_clusters_per_class=1,
        random_state=0,
    )
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"x{i}" for i in range(features)])
    frame["y"] = y
    return frame


def wait_job(client: httpx.Client, job: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job['id']} did not end in {timeout:.0f} s: {job}")
        job = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}, timeout=40).json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
    return job


def upload(client: httpx.Client, csv: Path, name: str) -> str:
    response = client.post(
        "/v1/datasets",
        params={"name": name},
        content=csv.read_bytes(),
        headers={"Content-Type": "text/csv"},
        timeout=300,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def train_via_service(
    client: httpx.Client, workdir: Path, name: str, params: dict[str, Any], frame: pd.DataFrame
) -> tuple[dict[str, Any], float, Path]:
    """Upload, train through the queue, wait: (the job, submit → succeeded seconds, the CSV path)."""
    csv = workdir / f"{name}.csv"
    frame.to_csv(csv, index=False)
    dataset_id = upload(client, csv, name)
    body = {
        "model": name,
        "dataset": dataset_id,
        "target": "y",
        "algorithm": "mlp",
        "device": "cpu",
        "params": params,
        "split": {"test": 0.1, "validation": 0.1, "seed": 0},
    }
    started = time.monotonic()
    response = client.post("/v1/jobs/train", json=body, timeout=60)
    response.raise_for_status()
    job = wait_job(client, response.json())
    return job, time.monotonic() - started, csv


def train_models(client: httpx.Client, workdir: Path) -> dict[str, list[float]]:
    """Train mlp32 and mlp-wide through the service; a sample row of each (for the request bodies)."""
    rows = {}
    for name, (features, hidden, classes, n, epochs) in MODELS.items():
        frame = dataset(features, classes, n)
        params = {
            "hidden_layers": hidden,
            "epochs": epochs,
            "batch_size": 128,
            "lr": 1e-3,
            "early_stopping_patience": 0,
            "seed": 0,
        }
        job, seconds, _ = train_via_service(client, workdir, name, params, frame)
        print(
            f"  trained {name} v{job['result']['version']} through the service in {seconds:.1f} s "
            f"(accuracy {job['result']['metrics'].get('accuracy')})",
            flush=True,
        )
        rows[name] = [float(v) for v in frame.drop(columns="y").iloc[0]]
    return rows


def w3_training(client: httpx.Client, workdir: Path, rows: int, home: Path) -> dict[str, Any]:
    """W3: the mlp, 5 epochs, batch 256, Adam 1e-3 on `rows` x 32: through the queue vs in-process."""
    import torch

    from training.pipeline import train_model
    from training.registry import ModelRegistry

    frame = dataset(32, 2, rows)
    params = {
        "hidden_layers": [256, 256],
        "epochs": 5,
        "batch_size": 256,
        "lr": 1e-3,
        "optimizer": "adam",
        "early_stopping_patience": 0,
        "seed": 0,
    }
    job, queued_s, csv = train_via_service(client, workdir, "w3-queue", params, frame)
    torch.set_num_threads(1)
    # Warm this process up the way the worker already is (its first training imported the optimiser's and
    # the loop's lazy modules, ~1 s): a tiny run first, not timed.
    frame.head(2000).to_csv(workdir / "w3-warmup.csv", index=False)
    train_model(
        data_path=workdir / "w3-warmup.csv",
        target="y",
        algorithm="mlp",
        model_name="w3-warmup",
        registry=ModelRegistry(home / "w3-registry"),
        params={**params, "epochs": 1},
        device="cpu",
    )
    started = time.monotonic()
    train_model(
        data_path=csv,
        target="y",
        algorithm="mlp",
        model_name="w3-inprocess",
        registry=ModelRegistry(home / "w3-registry"),
        params=params,
        device="cpu",
        split={"test": 0.1, "validation": 0.1, "seed": 0},
    )
    inprocess_s = time.monotonic() - started
    return {
        "rows": rows,
        "queue_s": round(queued_s, 3),
        "inprocess_s": round(inprocess_s, 3),
        "overhead_pct": round(100 * (queued_s - inprocess_s) / inprocess_s, 2),
        "job_duration_s": job["result"].get("duration_s"),
    }


def w2_compute(home: Path, seconds: float = 1.0) -> dict[str, Any]:
    """W2: forward-pass rows/s for 1-, 32- and 64-row calls, one torch thread, no server."""
    import torch

    from training.registry import ModelRegistry

    torch.set_num_threads(1)
    registry = ModelRegistry(home / "models")
    out: dict[str, Any] = {}
    for name, (features, *_rest) in MODELS.items():
        model = load_predictor(registry, "default", name).model
        for batch in (1, 32, 64):
            X = np.random.default_rng(0).standard_normal((batch, features)).astype(np.float32)
            model.predict_proba(X)
            calls, started, cpu = 0, time.perf_counter(), time.thread_time()
            while time.perf_counter() - started < seconds:
                model.predict_proba(X)
                calls += 1
            elapsed = time.perf_counter() - started
            # CPU time too: on a shared machine the wall time per call includes waiting for a core.
            out[f"{name}/{batch}"] = {
                "rows_per_s": round(calls * batch / elapsed, 1),
                "ms_per_call": round(1000 * elapsed / calls, 3),
                "cpu_ms_per_call": round(1000 * (time.thread_time() - cpu) / calls, 3),
            }
    return out
