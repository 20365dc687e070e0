"""Uploaded ONNX models served by the real service: gunicorn, one `mlq worker` for the inference and batch queues,
a real Redis. Each model is built offline (tests/onnx_models.py), uploaded with the Python client, predicted over
/v1 and batch-predicted, and the answers are compared with the source framework's on the same rows: scikit-learn's
predict_proba, the PyTorch module's softmax, and onnxruntime run in this process with the same tokenizer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx_models
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from api_server import gunicorn
from polling import wait_until
from redis_check import require_redis
from tokenizers import Tokenizer

from mlqueue import Client, ValidationFailed
from training.predictors import load_predictor

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180.0
JOB_TIMEOUT_S = 240.0
IRIS_LABELS = ["setosa", "versicolor", "virginica"]
# Texts of very different lengths: one word, a sentence, and ~120 words (well past the model's 32 tokens).
TEXTS = [
    "great",
    "the order arrived late and cold, and support never replied",
    "fast delivery",
    " ".join(onnx_models.SENTENCES * 2),
    "",
    "i would happily recommend this place",
]


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
    """The API under gunicorn and one worker (inference + batch) on a fresh MLQ_HOME."""
    redis_url = os.environ.get("MLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    redis_client = require_redis(redis_url)
    redis_client.flushdb()
    tmp = tmp_path_factory.mktemp("byom-serving")
    env = {
        **os.environ,
        "MLQ_REDIS_URL": redis_url,
        "MLQ_HOME": str(tmp / "home"),
        "MLQ_TORCH_THREADS": "1",
        "MLQ_HEARTBEAT_S": "0.5",
        "MLQ_SECRET_KEY": "byom-serving",
    }
    env.pop("MLQ_TOKEN", None)
    worker_log = (tmp / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(BIN / "mlq"), "worker", "--queues", "inference,batch", "--devices", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    try:
        with gunicorn(env, tmp / "api.log") as url:
            client = Client(url, timeout=120)

            def ready() -> bool:
                if worker.poll() is not None:
                    pytest.fail(f"worker exited:\n{(tmp / 'worker.log').read_text()[-4000:]}")
                # /readyz wants a train worker too; this service has none, so its inference count is read instead.
                try:
                    queues = httpx.get(f"{url}/readyz", timeout=5).json()["queues"]
                except (httpx.HTTPError, ValueError, KeyError):
                    return False
                return all(queues.get(q, {}).get("workers", 0) >= 1 for q in ("inference",))

            wait_until(ready, START_TIMEOUT_S, what="the service ready", interval_s=0.5)
            yield {"client": client, "tmp": tmp, "worker": worker}
            client.close()
    finally:
        stop(worker)
        worker_log.close()
        redis_client.flushdb()
        redis_client.close()


def predict(client: Client, model: str, rows: list[Any], version: Any = None, **post: Any) -> dict[str, Any]:
    job = client.predict(model, rows, version=version, postprocess=post or {"output": "both"}, wait=30)
    result: dict[str, Any] = client.result(job["id"], timeout=JOB_TIMEOUT_S)
    return result


def proba(predictions: list[dict[str, Any]], labels: list[Any]) -> np.ndarray:
    return np.array([[p["proba"][str(c)] for c in labels] for p in predictions])


def batch_output(client: Client, tmp: Path, model: str, frame: pd.DataFrame, name: str) -> pd.DataFrame:
    path = tmp / f"{name}.csv"
    frame.to_csv(path, index=False)
    dataset = client.upload_dataset(path)["id"]
    job = client.wait(client.batch_predict(model, dataset)["id"], timeout=JOB_TIMEOUT_S)
    assert job["status"] == "succeeded", job
    return pd.read_csv(client.download_output(job["id"], tmp / f"{name}-out.csv"), keep_default_na=False)


def test_a_skl2onnx_pipeline_answers_as_scikit_learn_over_v1_and_in_batch(service: dict[str, Any]) -> None:
    client, tmp = service["client"], service["tmp"]
    pipe, X = onnx_models.sklearn_pipeline(tmp / "iris.onnx")
    manifest = client.upload_model(
        "iris-onnx", tmp / "iris.onnx", metadata={"features": onnx_models.IRIS_FEATURES, "labels": IRIS_LABELS}
    )
    assert manifest["version"] == 1 and manifest["model_kind"] == "onnx"
    rows = X[::5].astype(float).round(4).tolist()  # 30 rows as lists, in feature order
    expected = pipe.predict_proba(np.asarray(rows, dtype=np.float32))
    answer = predict(client, "iris-onnx", [dict(zip(onnx_models.IRIS_FEATURES, r, strict=True)) for r in rows])
    assert answer["version"] == 1
    assert np.abs(proba(answer["predictions"], IRIS_LABELS) - expected).max() < 1e-5
    assert [p["label"] for p in answer["predictions"]] == [IRIS_LABELS[i] for i in expected.argmax(axis=1)]

    frame = pd.DataFrame(rows, columns=onnx_models.IRIS_FEATURES)
    out = batch_output(client, tmp, "iris-onnx", frame, "iris")
    batch = out[[f"proba_{c}" for c in IRIS_LABELS]].to_numpy(dtype=float)
    assert np.abs(batch - expected).max() < 1e-5
    assert list(out["label"]) == [IRIS_LABELS[i] for i in expected.argmax(axis=1)]


def test_a_torch_mlp_answers_as_its_softmax_and_bad_rows_are_422_naming_the_column(service: dict[str, Any]) -> None:
    client, tmp = service["client"], service["tmp"]
    module = onnx_models.torch_mlp(tmp / "mlp.onnx")
    client.upload_model("mlp-onnx", tmp / "mlp.onnx", metadata={"labels": ["a", "b", "c"]})
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(40, 6)).round(5)
    with torch.no_grad():
        expected = torch.softmax(module(torch.tensor(rows, dtype=torch.float32)), dim=1).numpy()
    answer = predict(client, "mlp-onnx", rows.tolist(), top_k=3)
    assert np.abs(proba(answer["predictions"], ["a", "b", "c"]) - expected).max() < 1e-5

    with pytest.raises(ValidationFailed) as missing:
        client.predict("mlp-onnx", [{"f0": 1.0, "f1": 2.0}])
    assert missing.value.status == 422 and ["inputs", 0, "f2"] in [e["loc"] for e in missing.value.errors]
    with pytest.raises(ValidationFailed) as mistyped:
        client.predict("mlp-onnx", [[1.0, 2.0, 3.0, "four", 5.0, 6.0]])
    assert ["inputs", 0, "f3"] in [e["loc"] for e in mistyped.value.errors]
    assert predict(client, "mlp-onnx", rows[:1].tolist())["predictions"]  # the worker still serves


def test_mlq_models_upload_registers_a_version_and_names_the_field_of_a_refusal(service: dict[str, Any]) -> None:
    tmp, url = service["tmp"], service["client"].url
    onnx_models.torch_mlp(tmp / "cli.onnx")
    (tmp / "cli-meta.json").write_text(json.dumps({"labels": ["a", "b", "c"], "output_kind": "logits"}))
    env = {**os.environ, "MLQ_URL": url}
    command = [str(BIN / "mlq"), "models", "upload", "mlp-cli", str(tmp / "cli.onnx"), "--metadata"]
    done = subprocess.run([*command, str(tmp / "cli-meta.json")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "mlp-cli version 1: classification, tensor input" in done.stdout
    assert "output: logits (logits), classes: ['a', 'b', 'c']" in done.stdout
    (tmp / "cli-bad.json").write_text(json.dumps({"labels": ["a", "b"]}))
    refused = subprocess.run(
        [*command, str(tmp / "cli-bad.json")], capture_output=True, text=True, env=env, timeout=300
    )
    assert refused.returncode != 0 and "metadata.labels: 2 labels for an output of 3 classes" in refused.stderr


def reference(directory: Path, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
    """onnxruntime in this process, each text alone (no padding at all), with the same tokenizer and length."""
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(onnx_models.MAX_LENGTH)
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    out, cut = [], []
    for text in texts:
        encoding = tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        (logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        exp = np.exp(logits[0] - logits[0].max())
        out.append(exp / exp.sum())
        cut.append(bool(encoding.overflowing))
    return np.array(out), cut


def test_a_tiny_text_classifier_answers_as_onnxruntime_in_process_for_texts_of_any_length(
    service: dict[str, Any],
) -> None:
    client, tmp = service["client"], service["tmp"]
    directory = onnx_models.text_classifier(tmp / "text-v1")
    manifest = client.upload_model(
        "reviews", directory / "model.onnx", directory / "tokenizer.json", directory / "metadata.json"
    )
    assert manifest["features"] == [{"name": "review", "dtype": "text"}]
    labels = ["negative", "positive"]
    expected, cut = reference(directory, TEXTS)
    assert cut.count(True) == 1  # the long text, alone
    answer = predict(client, "reviews", [{"review": t} for t in TEXTS])
    assert np.abs(proba(answer["predictions"], labels) - expected).max() < 1e-5
    assert [bool(p.get("truncated")) for p in answer["predictions"]] == cut

    # Many requests at once: the worker batches them (buckets of lengths), each answer is still its own text's.
    jobs = [client.predict("reviews", [{"review": t}], postprocess={"output": "proba"}) for t in TEXTS * 3]
    for job, want in zip(jobs, np.concatenate([expected] * 3), strict=True):
        got = client.result(job["id"], timeout=JOB_TIMEOUT_S)["predictions"][0]
        assert np.abs(np.array([got["proba"][c] for c in labels]) - want).max() < 1e-5

    frame = pd.DataFrame({"id": range(len(TEXTS)), "review": TEXTS})
    out = batch_output(client, tmp, "reviews", frame, "reviews")
    scored = [0, 1, 2, 3, 5]  # an empty CSV cell is a missing text: that row's error says so, the others score
    batch = out.iloc[scored][[f"proba_{c}" for c in labels]].to_numpy(dtype=float)
    assert np.abs(batch - expected[scored]).max() < 1e-5
    assert "expected text" in out["error"][4] and not any(out["error"][scored])

    with pytest.raises(ValidationFailed) as not_text:
        client.predict("reviews", [{"review": 42}])
    assert not_text.value.errors[0]["loc"] == ["inputs", 0, "review"]


def test_an_alias_moves_between_two_text_versions_without_a_restart(service: dict[str, Any]) -> None:
    client, tmp = service["client"], service["tmp"]
    if not any(m["name"] == "reviews" for m in client.list_models()):
        directory = onnx_models.text_classifier(tmp / "text-v1")
        client.upload_model(
            "reviews", directory / "model.onnx", directory / "tokenizer.json", directory / "metadata.json"
        )
    second = onnx_models.text_classifier(tmp / "text-v2", seed=1)
    v2 = client.upload_model("reviews", second / "model.onnx", second / "tokenizer.json", second / "metadata.json")
    expected_v2, _ = reference(second, TEXTS[:2])
    for target in (v2["version"] - 1, v2["version"]):
        client.set_alias("reviews", "production", target)
        deadline, served = time.monotonic() + 60, None
        while served != target and time.monotonic() < deadline:
            served = predict(client, "reviews", [{"review": TEXTS[0]}])["version"]
        assert served == target
    answer = predict(client, "reviews", [{"review": t} for t in TEXTS[:2]], version="production")
    assert np.abs(proba(answer["predictions"], ["negative", "positive"]) - expected_v2).max() < 1e-5


def test_an_mlqueue_export_re_uploaded_is_served_like_the_version_it_came_from(service: dict[str, Any]) -> None:
    """A version trained by mlqueue's library, exported with the existing export (raw columns in, one [n, 1] input
    per feature, a category column as strings), uploaded back: the same answers as the original Predictor."""
    from training.export import export_onnx
    from training.pipeline import train_model
    from training.registry import ModelRegistry

    client, tmp = service["client"], service["tmp"]
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "size": rng.normal(10, 3, 300).round(3),
            "weight": rng.normal(50, 10, 300).round(3),
            "colour": rng.choice(["red", "green", "blue"], 300),
        }
    )
    frame["kind"] = np.where(frame["size"] * 3 + (frame["colour"] == "red") * 8 > 35, "big", "small")
    frame.to_csv(tmp / "kinds.csv", index=False)
    registry = ModelRegistry(tmp / "local-registry")
    train_model(
        data_path=tmp / "kinds.csv",
        target="kind",
        algorithm="mlp",
        model_name="kinds",
        registry=registry,
        params={"hidden_layers": [16], "epochs": 5},
        device="cpu",
    )
    original = load_predictor(registry, "default", "kinds", 1, device="cpu")
    rows = frame.drop(columns="kind").head(25).to_dict("records")
    width = original.preprocess(rows[:1]).shape[1]
    export = export_onnx(
        original.preprocessor,
        original.model,
        original.features,
        original.feature_dtypes,
        original.task,
        width,
        tmp / "kinds.onnx",
    )
    assert export["inputs"] == "raw"
    manifest = client.upload_model("kinds-reuploaded", tmp / "kinds.onnx", metadata={"labels": original.classes})
    assert manifest["onnx"]["layout"] == "columns"
    assert {f["name"]: f["dtype"] for f in manifest["features"]} == original.feature_dtypes
    labels = list(original.classes or [])
    expected = proba(original.predict(rows, {"output": "both"}), labels)
    answer = predict(client, "kinds-reuploaded", rows)
    assert np.abs(proba(answer["predictions"], labels) - expected).max() < 1e-5
