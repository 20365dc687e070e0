"""POST /v1/models/{name}/versions through the Flask app on a real Redis: the checks run in their real child
process (python -m training.onnx_check), so every refusal below is what a client of the service gets.

Models are built offline by tests/onnx_models.py: a scikit-learn pipeline through skl2onnx, a PyTorch MLP and a
tiny text classifier through torch.onnx.export; the bad ones are those, altered with onnx's helpers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import onnx_models
import pytest
import torch
from api_support import make_settings
from flask.testing import FlaskClient
from onnx import helper

from api import create_app
from store.settings import Settings

pytestmark = pytest.mark.integration
IRIS_META = {"features": onnx_models.IRIS_FEATURES, "labels": ["setosa", "versicolor", "virginica"]}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("byom")
    onnx_models.sklearn_pipeline(root / "iris.onnx")
    onnx_models.torch_mlp(root / "mlp.onnx")
    onnx_models.text_classifier(root / "text")
    return {"iris": root / "iris.onnx", "mlp": root / "mlp.onnx", "text": root / "text", "root": root}


@pytest.fixture
def upload_settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path / "home", redis_url, secret_key="upload-test-key", max_model_mb=2)


@pytest.fixture
def api(upload_settings: Settings) -> Iterator[FlaskClient]:
    yield create_app(upload_settings).test_client()


def post(
    client: FlaskClient,
    name: str,
    model: bytes | None,
    metadata: dict[str, Any] | str | None = None,
    tokenizer: bytes | None = None,
    extra: dict[str, bytes] | None = None,
) -> Any:
    data: dict[str, Any] = {}
    if model is not None:
        data["model"] = (io.BytesIO(model), "model.onnx")
    if metadata is not None:
        data["metadata"] = metadata if isinstance(metadata, str) else json.dumps(metadata)
    if tokenizer is not None:
        data["tokenizer"] = (io.BytesIO(tokenizer), "tokenizer.json")
    if extra:
        data["external_data"] = [(io.BytesIO(v), k) for k, v in extra.items()]
    return client.post(f"/v1/models/{name}/versions", data=data, content_type="multipart/form-data")


def refused(response: Any, status: int, loc: list[str]) -> str:
    """The problem's detail, after checking its status and that its first error names `loc`."""
    body = response.get_json()
    assert response.status_code == status, body
    assert body["errors"][0]["loc"] == loc, body
    return str(body["detail"])


def test_an_uploaded_pipeline_is_a_signed_version_with_its_kind_inputs_outputs_and_source(
    api: FlaskClient, models: dict[str, Path], upload_settings: Settings
) -> None:
    response = post(api, "iris-onnx", models["iris"].read_bytes(), IRIS_META)
    manifest = response.get_json()
    assert response.status_code == 201, manifest
    assert response.headers["Location"] == "/v1/models/iris-onnx/versions/1"
    assert (manifest["model_kind"], manifest["task"], manifest["classes"]) == (
        "onnx",
        "classification",
        ["setosa", "versicolor", "virginica"],
    )
    assert [f["name"] for f in manifest["features"]] == onnx_models.IRIS_FEATURES
    spec = manifest["onnx"]
    assert (spec["layout"], spec["output"], spec["output_kind"], spec["batch"]) == (
        "tensor",
        "probabilities",
        "probabilities",
        "dynamic",
    )
    assert spec["inputs"] == [{"name": "X", "type": "float", "shape": [None, 4]}]
    assert manifest["source"]["producer"].startswith("skl2onnx")
    assert manifest["hmac"] and manifest["files"]["model.onnx"]["sha256"] == manifest["source"]["sha256"]
    listed = api.get("/v1/models/iris-onnx").get_json()
    assert [v["version"] for v in listed["versions"]] == [1]
    assert not list((upload_settings.home / "uploads").iterdir())  # nothing staged is left behind

    # Tampering is caught like any artifact's: the file no longer matches the signed manifest.
    stored = upload_settings.models_dir / "default" / "iris-onnx" / "1" / "model.onnx"
    stored.write_bytes(stored.read_bytes() + b"\0")
    tampered = api.get("/v1/models/iris-onnx/versions/1/artifact")
    assert tampered.status_code == 409 and tampered.get_json()["code"] == "artifact_integrity"


def test_a_text_model_records_its_tokenizer_column_and_max_length(api: FlaskClient, models: dict[str, Path]) -> None:
    text = models["text"]
    meta = json.loads((text / "metadata.json").read_text())
    response = post(api, "reviews", (text / "model.onnx").read_bytes(), meta, (text / "tokenizer.json").read_bytes())
    manifest = response.get_json()
    assert response.status_code == 201, manifest
    assert manifest["features"] == [{"name": "review", "dtype": "text"}]
    assert manifest["onnx"]["text"]["max_length"] == onnx_models.MAX_LENGTH
    assert manifest["onnx"]["output_kind"] == "logits"
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}


def _broken_graph(mlp: Path) -> bytes:
    model = onnx.load(str(mlp))
    model.graph.node[0].input[0] = "no_such_tensor"
    return bytes(model.SerializeToString())


def _custom_domain() -> bytes:
    node = helper.make_node("Magic", ["x"], ["y"], domain="com.example.custom")
    graph = helper.make_graph(
        [node],
        "custom",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example.custom", 1)]
    return bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())


def _external_outside(mlp: Path) -> bytes:
    model = onnx.load(str(mlp))
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location="../../secrets.bin")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    return bytes(model.SerializeToString())


def _fixed_batch(root: Path) -> bytes:
    model = onnx_models.MLP().eval()
    path = root / "fixed.onnx"
    torch.onnx.export(model, (torch.zeros(1, 6),), str(path), dynamo=False, input_names=["x"], output_names=["logits"])
    return path.read_bytes()


def _zipmap(root: Path) -> bytes:
    from skl2onnx import to_onnx

    pipe, X = onnx_models.sklearn_pipeline(root / "scratch.onnx")
    return bytes(to_onnx(pipe, X[:1], target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString())


BAD_UPLOADS: list[tuple[str, Any, int, list[str], str]] = [
    ("not onnx", lambda m: (b"just some text, not a graph", None, None), 422, ["model"], "not an ONNX model"),
    ("checker", lambda m: (_broken_graph(m["mlp"]), None, None), 422, ["model"], "onnx.checker"),
    ("custom op", lambda m: (_custom_domain(), None, None), 422, ["model"], "com.example.custom"),
    ("external", lambda m: (_external_outside(m["mlp"]), None, None), 422, ["external_data"], "never a path"),
    ("fixed batch", lambda m: (_fixed_batch(m["root"]), None, None), 422, ["metadata", "batch"], "batch"),
    ("zipmap", lambda m: (_zipmap(m["root"]), IRIS_META, None), 422, ["metadata", "output"], "zipmap"),
    (
        "features",
        lambda m: (m["iris"].read_bytes(), {"features": ["a", "b", "c"]}, None),
        422,
        ["metadata", "features"],
        "3 names for an input 4 columns wide",
    ),
    (
        "labels",
        lambda m: (m["iris"].read_bytes(), {"labels": ["a", "b"]}, None),
        422,
        ["metadata", "labels"],
        "2 labels for an output of 3 classes",
    ),
    ("unknown key", lambda m: (m["iris"].read_bytes(), {"colour": 1}, None), 422, ["metadata", "colour"], "unknown"),
    ("metadata json", lambda m: (m["iris"].read_bytes(), "{task:", None), 422, ["metadata"], "not valid JSON"),
    (
        "no tokenizer",
        lambda m: ((m["text"] / "model.onnx").read_bytes(), {"text": "review"}, None),
        422,
        ["tokenizer"],
        "needs its tokenizer.json",
    ),
    (
        "tokenizer not json",
        lambda m: ((m["text"] / "model.onnx").read_bytes(), {"text": "review"}, b"{oops"),
        422,
        ["tokenizer"],
        "not valid JSON",
    ),
    (
        "tokenizer not a tokenizer",
        lambda m: ((m["text"] / "model.onnx").read_bytes(), {"text": "review"}, b'{"model": 1}'),
        422,
        ["tokenizer"],
        "does not load",
    ),
    (
        "text inputs",
        lambda m: (m["mlp"].read_bytes(), {"text": "review"}, (m["text"] / "tokenizer.json").read_bytes()),
        422,
        ["metadata", "text"],
        "input_ids",
    ),
    ("no model", lambda m: (None, IRIS_META, None), 422, ["body", "model"], "'model' field"),
]


@pytest.mark.parametrize(("case", "build", "status", "loc", "words"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_a_bad_upload_is_a_4xx_naming_the_field_and_registers_nothing(
    api: FlaskClient, models: dict[str, Path], case: str, build: Any, status: int, loc: list[str], words: str
) -> None:
    model, metadata, tokenizer = build(models)
    detail = refused(post(api, "bad", model, metadata, tokenizer), status, loc)
    assert words.lower() in detail.lower(), detail
    assert api.get("/v1/models/bad").status_code == 404


def test_an_upload_over_mlq_max_model_mb_is_413_and_a_json_body_415(api: FlaskClient) -> None:
    big = post(api, "big", b"\0" * (3 * 1024 * 1024))
    assert big.status_code == 413 and "MLQ_MAX_MODEL_MB" in big.get_json()["detail"]
    as_json = api.post("/v1/models/big/versions", json={"model": "x"})
    assert as_json.status_code == 415


def test_external_data_uploaded_beside_the_model_is_accepted(api: FlaskClient, models: dict[str, Path]) -> None:
    model = onnx.load(str(models["mlp"]))
    onnx.external_data_helper.convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    folder = models["root"] / "external"
    folder.mkdir(exist_ok=True)
    onnx.save_model(model, str(folder / "model.onnx"))
    response = post(
        api,
        "external",
        (folder / "model.onnx").read_bytes(),
        {},
        extra={"weights.bin": (folder / "weights.bin").read_bytes()},
    )
    manifest = response.get_json()
    assert response.status_code == 201, manifest
    assert manifest["onnx"]["external_data"] == ["weights.bin"] and "weights.bin" in manifest["files"]
    bad_name = post(api, "external", (folder / "model.onnx").read_bytes(), {}, extra={"model.onnx": b"x"})
    refused(bad_name, 422, ["external_data"])
