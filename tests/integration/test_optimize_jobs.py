"""Optimize jobs through the real service: gunicorn, one `mlq worker` for both queues, a real Redis.

A wide MLP (512 × 512) on a synthetic, well-separated set is the parent: quantized, pruned and exported; a random
forest on the same set is distilled. Predictions go through the inference worker; exports are downloaded over
HTTP and run with onnxruntime / torch.jit in this process, i.e. outside mlqueue.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from api_server import gunicorn
from polling import wait_until
from redis_check import require_redis
from sklearn.datasets import make_classification

from mlqueue import Client, ValidationFailed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180.0
JOB_TIMEOUT_S = 240.0
FEATURES = [f"f{i}" for i in range(8)]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The API under gunicorn and one worker on a fresh MLQ_HOME; the parents trained and recorded."""
    redis_url = os.environ.get("MLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    redis_client = require_redis(redis_url)
    redis_client.flushdb()
    tmp = tmp_path_factory.mktemp("optimize")
    env = {
        **os.environ,
        "MLQ_REDIS_URL": redis_url,
        "MLQ_HOME": str(tmp / "home"),
        "MLQ_TORCH_THREADS": "1",
        "MLQ_HEARTBEAT_S": "0.5",
    }
    env.pop("MLQ_TOKEN", None)
    worker_log = (tmp / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(BIN / "mlq"), "worker", "--queues", "train,inference", "--devices", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    # The API as `mlq api` runs it, on a port gunicorn binds itself (port 0), started while the worker boots.
    try:
        with gunicorn(env, tmp / "api.log") as url:
            env["MLQ_URL"] = url
            client = Client(url, timeout=60)

            def ready() -> bool:
                if worker.poll() is not None:
                    pytest.fail(f"worker.log process exited:\n{(tmp / 'worker.log').read_text()[-4000:]}")
                try:
                    client.ready()
                    return True
                except Exception:
                    return False

            wait_until(ready, START_TIMEOUT_S, what="the service ready", interval_s=0.5)
            yield from _trained(client, env, tmp)
    finally:
        stop(worker)
        worker_log.close()
        redis_client.flushdb()
        redis_client.close()


def _trained(client: Client, env: dict[str, str], tmp: Path) -> Iterator[dict[str, Any]]:
    X, y = make_classification(n_samples=600, n_features=8, n_informative=6, class_sep=2.0, random_state=0)
    frame = pd.DataFrame(X.round(4), columns=FEATURES)
    frame["label"] = np.where(y == 1, "pos", "neg")
    frame.to_csv(tmp / "wide.csv", index=False)
    dataset = client.upload_dataset(tmp / "wide.csv")["id"]
    mlp = client.train(
        "wide",
        dataset,
        target="label",
        algorithm="mlp",
        params={"hidden_layers": [512, 512], "epochs": 10, "lr": 0.003, "batch_size": 32},
    )
    forest = client.train("forest", dataset, target="label", algorithm="random_forest", params={"n_estimators": 60})
    for job in (mlp, forest):
        assert client.result(job["id"], timeout=JOB_TIMEOUT_S)["version"] == 1
    yield {
        "client": client,
        "env": env,
        "home": tmp / "home",
        "rows": frame[FEATURES].to_dict("records"),
        "worker_log": tmp / "worker.log",
        "versions": {},
    }
    client.close()


def optimized(service: dict[str, Any], model: str, version: int, method: str, **params: Any) -> dict[str, Any]:
    """The result of an optimize job, run once per (model, version, method, params) in this module."""
    key = (model, version, method, json.dumps(params, sort_keys=True))
    if key not in service["versions"]:
        job = service["client"].optimize(model, version, method, params)
        assert job["type"] == "optimize"
        service["versions"][key] = service["client"].result(job["id"], timeout=JOB_TIMEOUT_S)
    return dict(service["versions"][key])


def served_proba(service: dict[str, Any], model: str, version: int | str | None, rows: list[Any]) -> np.ndarray:
    answer = service["client"].result(
        service["client"].predict(model, rows, version=version, wait=30)["id"], timeout=60
    )
    if version is not None and not isinstance(version, str):
        assert answer["version"] == version
    return np.array([[p["proba"][c] for c in ("neg", "pos")] for p in answer["predictions"]])


def test_quantize_dynamic_is_2_5x_smaller_within_1_point_and_served_by_the_inference_worker(
    service: dict[str, Any],
) -> None:
    result = optimized(service, "wide", 1, "quantize_dynamic")
    comparison = result["comparison"]
    parent, child = comparison["parent"], comparison["child"]
    assert parent["artifact_bytes"] / child["artifact_bytes"] >= 2.5, comparison
    assert abs(child["metrics"]["accuracy"] - parent["metrics"]["accuracy"]) <= 0.01, comparison
    assert set(child["latency_ms"]) == {"1", "64"} and all(v > 0 for v in child["latency_ms"].values())
    manifest = service["client"].get_version("wide", result["version"])
    assert (manifest["parent"], manifest["model_kind"], manifest["optimization"]["method"]) == (
        1,
        "torch_int8",
        "quantize_dynamic",
    )
    rows = service["rows"][:16]
    float_proba, int8_proba = (
        served_proba(service, "wide", 1, rows),
        served_proba(service, "wide", result["version"], rows),
    )
    assert np.abs(float_proba - int8_proba).max() < 0.05  # the same model, in int8


def test_promoting_the_quantized_version_is_one_put_and_the_worker_switches_to_it(service: dict[str, Any]) -> None:
    client = service["client"]
    version = optimized(service, "wide", 1, "quantize_dynamic")["version"]
    for target in (1, version):  # the worker serves v1 first, then follows the alias without a restart
        client.set_alias("wide", "production", target)
        # The API re-reads an alias at most every MODEL_RECHECK_S (1 s): ask until the move is seen.
        deadline, served = time.monotonic() + 30, None
        while served != target and time.monotonic() < deadline:
            served = client.result(client.predict("wide", service["rows"][:2], wait=30)["id"], timeout=60)["version"]
        assert served == target
    client.delete_alias("wide", "production")


def test_prune_at_half_reports_half_the_weights_zero_and_stays_within_2_points(service: dict[str, Any]) -> None:
    result = optimized(service, "wide", 1, "prune", amount=0.5, finetune_epochs=3)
    assert abs(result["optimization"]["sparsity"] - 0.5) < 0.01
    deltas = result["comparison"]["metric_deltas"]
    assert deltas["accuracy"] >= -0.02, result["comparison"]
    assert served_proba(service, "wide", result["version"], service["rows"][:4]).shape == (4, 2)


def test_distilling_a_random_forest_into_a_16_unit_mlp_stays_within_3_points(service: dict[str, Any]) -> None:
    result = optimized(service, "forest", 1, "distill", hidden_layers=[16], epochs=30)
    comparison = result["comparison"]
    assert comparison["metric_deltas"]["accuracy"] >= -0.03, comparison
    assert comparison["child"]["artifact_bytes"] < comparison["parent"]["artifact_bytes"]
    manifest = service["client"].get_version("forest", result["version"])
    assert (manifest["algorithm"], manifest["params"]["hidden_layers"]) == ("mlp", [16])
    assert manifest["optimization"]["teacher"]["algorithm"] == "random_forest"


@pytest.mark.parametrize(("source", "tolerance"), [("float", 1e-4), ("quantized", 1e-2)])
def test_the_onnx_export_run_by_onnxruntime_outside_mlqueue_matches_the_service(
    service: dict[str, Any], source: str, tolerance: float
) -> None:
    parent = 1 if source == "float" else optimized(service, "wide", 1, "quantize_dynamic")["version"]
    result = optimized(service, "wide", parent, "export", format="onnx")
    onnx_bytes = service["client"].download_artifact("wide", result["version"])
    session = ort.InferenceSession(onnx_bytes)
    rows = service["rows"][:64]
    feeds = {f: np.array([[row[f]] for row in rows], dtype=np.float32) for f in FEATURES}
    (probabilities,) = session.run(["probabilities"], feeds)
    np.testing.assert_allclose(probabilities, served_proba(service, "wide", parent, rows), atol=tolerance)


def test_a_torchscript_export_downloads_and_no_worker_ever_loads_it(service: dict[str, Any]) -> None:
    client = service["client"]
    result = optimized(service, "wide", 1, "export", format="torchscript")
    module = torch.jit.load(io.BytesIO(client.download_artifact("wide", result["version"])))  # trusted: ours
    assert module(torch.zeros(3, 8)).shape == (3, 2)
    # Refused at submit (422), before any job is queued: no worker loads an export.
    with pytest.raises(ValidationFailed) as refused:
        client.predict("wide", service["rows"][:1], version=result["version"])
    assert refused.value.problem["code"] == "export_not_servable" and "artifact" in str(refused.value)
    with pytest.raises(ValidationFailed, match="export"):
        client.set_alias("wide", "staging", result["version"])
    # The newest version is the export, yet a request naming no version is served by a version that is not one.
    newest = max(v["version"] for v in client.get_model("wide")["versions"])
    assert newest == result["version"]
    answer = client.result(client.predict("wide", service["rows"][:1], wait=30)["id"], timeout=60)
    assert answer["version"] != result["version"]
    manifest = client.get_version("wide", result["version"])
    assert manifest["kind"] == "export" and manifest["export"]["format"] == "torchscript"
    job = client.get_job(manifest["job_id"])
    # A finished optimisation says how it ended, not "measuring parent and child".
    assert job["progress"]["message"] == f"registered version {result['version']} (export of version 1)"


def test_a_tampered_optimised_artifact_is_refused_before_it_is_loaded(service: dict[str, Any]) -> None:
    client = service["client"]
    result = optimized(service, "wide", 1, "prune", amount=0.3, finetune_epochs=0)
    weights = service["home"] / "models" / "default" / "wide" / str(result["version"]) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    job = client.wait(client.predict("wide", service["rows"][:1], version=result["version"])["id"], timeout=60)
    assert job["status"] == "failed" and job["error"]["type"] == "artifact_integrity", job
    refused = client.wait(client.optimize("wide", result["version"], "quantize_dynamic")["id"], timeout=60)
    assert refused["status"] == "failed" and refused["error"]["type"] == "artifact_integrity", refused


def test_a_method_that_does_not_apply_is_a_422_naming_those_that_do(service: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as refused:
        service["client"].optimize("forest", 1, "quantize_dynamic")
    assert refused.value.status == 422 and "distill, export (onnx)" in str(refused.value)
    with pytest.raises(ValidationFailed, match="amount"):
        service["client"].optimize("wide", 1, "prune", {"amount": 2})
    with pytest.raises(ValidationFailed, match="MLQ_MAX_EPOCHS"):
        service["client"].optimize("forest", 1, "distill", {"epochs": 5000})


def test_cancel_stops_a_distillation_mid_run_and_registers_nothing(service: dict[str, Any]) -> None:
    client = service["client"]
    before = client.get_model("forest")["latest_version"]
    job = client.optimize("forest", 1, "distill", {"hidden_layers": [16], "epochs": 1000, "batch_size": 1})
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (client.get_job(job["id"], wait=1).get("progress") or {}).get("epoch") is None:
        assert time.monotonic() < deadline, "the distillation never reported an epoch"
    client.cancel(job["id"])
    final = client.wait(job["id"], timeout=60)
    assert final["status"] == "cancelled", final
    assert client.get_model("forest")["latest_version"] == before


def test_mlq_optimize_prints_the_comparison_table(service: dict[str, Any]) -> None:
    out = subprocess.run(
        [
            str(BIN / "mlq"),
            "optimize",
            "wide",
            "1",
            "--method",
            "prune",
            "--params",
            '{"amount": 0.25, "finetune_epochs": 0}',
        ],
        capture_output=True,
        text=True,
        env=service["env"],
        timeout=JOB_TIMEOUT_S,
    )
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert "PARENT v1" in header and "CHILD v" in header
    assert [r.split("  ")[0] for r in rows][:3] == ["artifact bytes", "latency 1 row (ms)", "latency 64 rows (ms)"]
    assert any(r.startswith("test accuracy") for r in rows)
    assert "sparsity 25.0%" in out.stderr


def test_mlq_optimize_download_saves_the_exported_onnx_file(service: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "wide.onnx"
    out = subprocess.run(
        [
            str(BIN / "mlq"),
            "optimize",
            "wide",
            "1",
            "--method",
            "export",
            "--format",
            "onnx",
            "--download",
            str(target),
        ],
        capture_output=True,
        text=True,
        env=service["env"],
        timeout=JOB_TIMEOUT_S,
    )
    assert out.returncode == 0, out.stderr
    session = ort.InferenceSession(target.read_bytes())
    assert [i.name for i in session.get_inputs()] == FEATURES
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
