"""The Open Inference Protocol (/v2) through real third-party clients: tritonclient's HTTP client with its defaults
(binary tensors) and with JSON, kserve's v2 REST client, and the spec's own example requests; against one real
gunicorn API with tokens and one real inference worker. Answers are compared with the model called in-process.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from api_server import gunicorn
from sklearn.datasets import load_diabetes, load_iris
from tritonclient.utils import InferenceServerException

from store.contract import INFERENCE_QUEUE
from store.settings import Settings
from training.pipeline import train_model
from training.predictors import load_predictor
from training.registry import ModelRegistry

pytestmark = pytest.mark.integration
TENANT = "acme"
TOKEN = "tok-acme"
IRIS = ["sl", "sw", "pl", "pw"]
ROOT = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = Path(os.environ.get("MLQ_KSERVE_PYTHON", ROOT / ".venv-kserve" / "bin" / "python"))


def _train(path: Path, target: str, algorithm: str, name: str, registry: ModelRegistry) -> None:
    train_model(data_path=path, target=target, algorithm=algorithm, model_name=name, registry=registry, tenant=TENANT)


@pytest.fixture(scope="module")
def models(mlq_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """iris-lr (4 numeric features), iris-mixed (3 numeric + a categorical `colour`), diab (a ridge regressor)."""
    tmp = tmp_path_factory.mktemp("oip-data")
    registry = ModelRegistry(mlq_settings.models_dir, secret_key=mlq_settings.secret_key)
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame.columns = IRIS
    frame["species"] = iris.target_names[iris.target]
    frame.to_csv(tmp / "iris.csv", index=False)
    _train(tmp / "iris.csv", "species", "logistic_regression", "iris-lr", registry)
    mixed = frame.drop(columns="pw").assign(colour=np.where(np.arange(len(frame)) % 3 == 0, "red", "blue"))
    mixed.to_csv(tmp / "mixed.csv", index=False)
    _train(tmp / "mixed.csv", "species", "logistic_regression", "iris-mixed", registry)
    registry.set_alias(TENANT, "iris-mixed", "production", 1)
    diab = load_diabetes(as_frame=True).frame.iloc[:, [0, 2, 3, -1]]
    diab.to_csv(tmp / "diab.csv", index=False)
    _train(tmp / "diab.csv", "target", "ridge", "diab", registry)
    return {"registry": registry, "iris": frame, "mixed": mixed, "diab": diab}


@pytest.fixture(scope="module")
def base(
    mlq_settings: Settings, start_worker: Any, models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    start_worker([INFERENCE_QUEUE])
    env = {
        "MLQ_REDIS_URL": mlq_settings.redis_url,
        "MLQ_HOME": str(mlq_settings.home),
        "MLQ_AUTH_TOKENS": f"{TENANT}:{TOKEN}",
    }
    with gunicorn(env, tmp_path_factory.mktemp("oip-api") / "gunicorn.log") as url:
        yield url


def auth() -> dict[str, str]:
    """A fresh dict each time: tritonclient writes Inference-Header-Content-Length into the headers it is given."""
    return {"Authorization": f"Bearer {TOKEN}"}


def expect(models: dict[str, Any], model: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    predictions: list[dict[str, Any]] = load_predictor(models["registry"], TENANT, model, 1).predict(rows)
    return predictions


def client(base: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(base.removeprefix("http://"), connection_timeout=60, network_timeout=60)


def test_tritonclient_sees_a_live_ready_server_and_the_models_features_as_inputs(base: str) -> None:
    c = client(base)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("iris-lr", headers=auth()) and c.is_model_ready("iris-mixed", "production", headers=auth())
    meta = c.get_model_metadata("iris-mixed", headers=auth())
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("sl", "FP64"),
        ("sw", "FP64"),
        ("pl", "FP64"),
        ("colour", "BYTES"),
    ]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"] and meta["versions"] == ["1"]
    assert c.get_server_metadata(headers=auth())["name"] == "mlqueue"
    # The same tokens as /v1: none, or another tenant's view, is refused; the probes need none.
    assert httpx.get(f"{base}/v2/models/iris-lr").status_code == 401
    assert "error" in httpx.get(f"{base}/v2/models/iris-lr").json()
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}


def test_tritonclient_binary_tensors_one_per_feature_give_the_models_own_answers(
    base: str, models: dict[str, Any]
) -> None:
    frame = models["iris"].iloc[::15]
    inputs = []
    for name in IRIS:
        tensor = triton.InferInput(name, [len(frame), 1], "FP32")
        tensor.set_data_from_numpy(frame[[name]].to_numpy(np.float32))  # binary by default
        inputs.append(tensor)
    result = client(base).infer("iris-lr", inputs, headers=auth())  # no outputs named: binary outputs
    want = expect(models, "iris-lr", frame[IRIS].astype(np.float32).astype(float).to_dict("records"))
    labels = [x.decode() for x in result.as_numpy("label")]
    assert labels == [p["label"] for p in want]
    proba = result.as_numpy("probabilities")
    classes = ["setosa", "versicolor", "virginica"]
    assert proba.shape == (len(frame), 3)
    assert np.allclose(proba, [[p["proba"][c] for c in classes] for p in want], atol=1e-6)
    assert result.get_response()["model_version"] == "1"


def test_tritonclient_json_tensors_a_feature_matrix_and_named_outputs(base: str, models: dict[str, Any]) -> None:
    frame = models["iris"].iloc[1::20]
    matrix = triton.InferInput("input", [len(frame), 4], "FP64")
    matrix.set_data_from_numpy(frame[IRIS].to_numpy(np.float64), binary_data=False)
    outputs = [triton.InferRequestedOutput("label", binary_data=False)]
    # Triton's priority 1 (its highest) rides the high lane; timeout is in microseconds.
    result = client(base).infer(
        "iris-lr", [matrix], outputs=outputs, request_id="r-7", headers=auth(), priority=1, timeout=20_000_000
    )
    response = result.get_response()
    assert response["id"] == "r-7" and [o["name"] for o in response["outputs"]] == ["label"]
    assert response["outputs"][0]["data"] == [
        p["label"] for p in expect(models, "iris-lr", frame[IRIS].to_dict("records"))
    ]


def test_a_categorical_feature_as_bytes_on_an_alias_and_a_regressor(base: str, models: dict[str, Any]) -> None:
    frame = models["mixed"].iloc[::25]
    inputs = []
    for name in ("sl", "sw", "pl"):
        tensor = triton.InferInput(name, [len(frame)], "FP64")
        tensor.set_data_from_numpy(frame[name].to_numpy(np.float64))
        inputs.append(tensor)
    colour = triton.InferInput("colour", [len(frame)], "BYTES")
    colour.set_data_from_numpy(frame["colour"].to_numpy(np.object_))
    inputs.append(colour)
    result = client(base).infer("iris-mixed", inputs, model_version="production", headers=auth())
    rows = frame.drop(columns="species").to_dict("records")
    assert [x.decode() for x in result.as_numpy("label")] == [p["label"] for p in expect(models, "iris-mixed", rows)]
    diab = models["diab"].iloc[:5]
    features = [c for c in diab.columns if c != "target"]
    inputs = []
    for name in features:
        tensor = triton.InferInput(name, [len(diab), 1], "FP64")
        tensor.set_data_from_numpy(diab[[name]].to_numpy(np.float64), binary_data=False)
        inputs.append(tensor)
    got = client(base).infer("diab", inputs, headers=auth()).as_numpy("prediction")
    want = [p["value"] for p in expect(models, "diab", diab[features].to_dict("records"))]
    assert np.allclose(got, want, rtol=1e-6)


def test_the_specs_example_requests(base: str) -> None:
    """inference_rest.md's example: as written it asks an output and names inputs this model lacks (400s that say
    which; its `input1` even holds 1 element for a shape of 3); with the model's own input name in the same layout
    it is answered with the documented response shape."""
    example = {
        "id": "42",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
            {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
        ],
        "outputs": [{"name": "output0"}],
    }
    refused = httpx.post(f"{base}/v2/models/iris-lr/infer", json=example, headers=auth(), timeout=60)
    assert refused.status_code == 400 and "'output0'" in refused.json()["error"], refused.text
    del example["outputs"]
    refused = httpx.post(f"{base}/v2/models/iris-lr/infer", json=example, headers=auth(), timeout=60)
    assert refused.status_code == 400 and "'input1'" in refused.json()["error"], refused.text
    example["inputs"] = [{"name": "input", "shape": [2, 4], "datatype": "UINT32", "data": [[5, 3, 1, 0], [6, 3, 5, 2]]}]
    example["outputs"] = [{"name": "probabilities"}]
    answer = httpx.post(f"{base}/v2/models/iris-lr/infer", json=example, headers=auth(), timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "42" and body["model_name"] == "iris-lr"
    (out,) = body["outputs"]
    assert out["name"] == "probabilities" and out["shape"] == [2, 3] and out["datatype"] == "FP64"
    assert len(out["data"]) == 6 and abs(sum(out["data"][:3]) - 1) < 1e-4


def _binary_request(header: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + blob, {**auth(), "Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "[n, 4]"),
        ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}, "holds 3"),
        ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]}, "numeric"),
        ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP31", "data": [1] * 4}]}, "FP31"),
        ({"inputs": [{"name": n, "shape": [1], "datatype": "BYTES", "data": ["x"]} for n in IRIS]}, "'sl' is numeric"),
        ({"inputs": [{"name": n, "shape": [1], "datatype": "FP32", "data": [1]} for n in IRIS[:3]]}, "missing"),
        (
            {
                "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}],
                "outputs": [{"name": "x"}],
            },
            "unknown output",
        ),
        ({"inputs": []}, "non-empty"),
    ],
)
def test_a_tensor_that_does_not_fit_the_model_is_a_400_naming_it(base: str, body: dict[str, Any], says: str) -> None:
    answer = httpx.post(f"{base}/v2/models/iris-lr/infer", json=body, headers=auth(), timeout=60)
    assert answer.status_code == 400 and says in answer.json()["error"], answer.text


def test_binary_data_whose_size_disagrees_with_its_header_is_a_400(base: str) -> None:
    spec = {"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
    good = struct.pack("<4f", 5.1, 3.5, 1.4, 0.2)
    url = f"{base}/v2/models/iris-lr/infer"
    body, headers = _binary_request({"inputs": [spec]}, good)
    assert httpx.post(url, content=body, headers=headers, timeout=60).status_code == 200
    for blob, says in ((good[:12], "runs past"), (good + b"\0\0\0\0", "add up to")):
        body, headers = _binary_request({"inputs": [spec]}, blob)
        answer = httpx.post(url, content=body, headers=headers, timeout=60)
        assert answer.status_code == 400 and says in answer.json()["error"], answer.text
    infinite = struct.pack("<4f", 5.1, float("inf"), 1.4, 0.2)
    body, headers = _binary_request({"inputs": [spec]}, infinite)
    answer = httpx.post(url, content=body, headers=headers, timeout=60)
    assert answer.status_code == 400 and "finite" in answer.json()["error"], answer.text
    spec["parameters"] = {"binary_data_size": 12}
    body, headers = _binary_request({"inputs": [spec]}, good[:12])
    answer = httpx.post(url, content=body, headers=headers, timeout=60)
    assert answer.status_code == 400 and "need 16" in answer.json()["error"], answer.text
    headers["Inference-Header-Content-Length"] = str(len(body) + 1)
    assert httpx.post(url, content=body, headers=headers, timeout=60).status_code == 400
    try:
        client(base).get_model_metadata("no-such-model", headers=auth())
        raise AssertionError("an unknown model must be refused")
    except InferenceServerException as exc:
        assert "no-such-model" in str(exc.message())


KSERVE_SCRIPT = """
import asyncio, json, sys
from kserve import InferenceRESTClient, RESTConfig, InferRequest, InferInput

async def main(base, token):
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    headers = {"Authorization": "Bearer " + token}
    live = await client.is_server_live(base, headers=headers)
    ready = await client.is_server_ready(base, headers=headers)
    model_ready = await client.is_model_ready(base, "iris-lr", headers=headers)
    tensor = InferInput("input", [2, 4], "FP32")
    tensor.set_data_from_numpy(__import__("numpy").array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "float32"))
    result = await client.infer(base, InferRequest("iris-lr", [tensor], request_id="k1"), model_name="iris-lr",
                                headers=headers)
    labels = [x for x in result.outputs[0].data]
    await client.close()
    print(json.dumps({"live": live, "ready": ready, "model_ready": model_ready, "labels": labels, "id": result.id}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_kserves_v2_rest_client_checks_health_and_infers(base: str, models: dict[str, Any]) -> None:
    if not KSERVE_PYTHON.exists():
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{KSERVE_PYTHON} is missing: `make install` builds it (kserve's own venv)")
        pytest.skip(f"kserve's venv {KSERVE_PYTHON} is not built (make install)")
    done = subprocess.run(
        [str(KSERVE_PYTHON), "-c", KSERVE_SCRIPT, base, TOKEN], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    want = expect(
        models, "iris-lr", [dict(zip(IRIS, r, strict=True)) for r in ([5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3])]
    )
    assert answer["live"] and answer["ready"] and answer["model_ready"] and answer["id"] == "k1"
    assert answer["labels"] == [p["label"] for p in want]
