"""`mlq train --local` and `mlq predict --local` as a user runs them: real subprocesses on a messy CSV."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_iris

MLQ = str(Path(sys.executable).parent / "mlq")
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width", "color"]
CLASSES = {"setosa", "versicolor", "virginica"}


def mlq(*args: str, home: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLQ_HOME": str(home)}  # the default home comes from MLQ_HOME
    env.pop("MLQ_DEBUG", None)
    return subprocess.run([MLQ, *args], capture_output=True, text=True, timeout=timeout, env=env)


def write_messy_iris(path: Path) -> list[dict[str, str]]:
    """Iris with a categorical column, some blank cells in a feature and in the category; returns the rows."""
    iris = load_iris()
    colors = ["red", "green", "blue"]
    rows = []
    for i, (values, target) in enumerate(zip(iris.data, iris.target, strict=True)):
        row = {name: f"{v:.1f}" for name, v in zip(FEATURES[:4], values, strict=False)}
        row["sepal_width"] = "" if i % 17 == 3 else row["sepal_width"]
        row["color"] = "" if i % 23 == 5 else colors[(i * 7) % 3]
        row["species"] = str(iris.target_names[target])
        rows.append(row)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FEATURES, "species"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two versions of one model: an MLP (version 1), then a logistic regression (version 2)."""
    tmp = tmp_path_factory.mktemp("local")
    home, data = tmp / "home", tmp / "iris.csv"
    rows = write_messy_iris(data)
    first = mlq(
        "train",
        "--local",
        "--data",
        str(data),
        "--target",
        "species",
        "--algorithm",
        "mlp",
        "--model",
        "iris",
        "--params",
        '{"epochs": 3, "hidden_layers": [8]}',
        home=home,
    )
    second = mlq(
        "train",
        "--local",
        "--data",
        str(data),
        "--target",
        "species",
        "--algorithm",
        "logistic_regression",
        "--model",
        "iris",
        "--task",
        "classification",
        "--home",
        str(home),
        home=tmp / "unused",
    )
    return {"home": home, "data": data, "rows": rows, "first": first, "second": second, "tmp": tmp}


def test_local_training_prints_the_result_json_and_numbers_versions_one_then_two(trained: dict[str, Any]) -> None:
    first, second = trained["first"], trained["second"]
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert set(one) == {"model", "version", "metrics", "epochs_run", "duration_s"}
    assert (one["model"], one["version"], two["version"]) == ("iris", 1, 2)
    for result in (one, two):
        assert {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"} <= set(result["metrics"])
        assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert one["epochs_run"] == 3
    assert two["metrics"]["accuracy"] > 0.8  # a linear model separates iris well even with the blanks


def test_local_training_reports_each_epoch_on_stderr_and_keeps_stdout_for_data(trained: dict[str, Any]) -> None:
    lines = [line for line in trained["first"].stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(" loss " in line and " val_loss " in line for line in lines)
    assert "epoch 1/3" not in trained["first"].stdout
    json.loads(trained["first"].stdout)  # stdout is exactly one JSON document


def test_local_prediction_returns_one_label_per_row_from_the_known_classes(trained: dict[str, Any]) -> None:
    rows = [
        {k: (float(v) if v and k != "color" else (v or None)) for k, v in row.items() if k in FEATURES}
        for row in trained["rows"][::10]
    ]
    assert any(r["sepal_width"] is None for r in rows) or any(r["color"] is None for r in rows)
    inputs = trained["tmp"] / "rows.json"
    inputs.write_text(json.dumps(rows))
    latest = mlq("predict", "--local", "iris", "--input", str(inputs), home=trained["home"])
    assert latest.returncode == 0, latest.stderr
    answer = json.loads(latest.stdout)
    assert (answer["model"], answer["version"]) == ("iris", 2)
    assert len(answer["predictions"]) == len(rows)
    assert {p["label"] for p in answer["predictions"]} <= CLASSES
    assert [p["row"] for p in answer["predictions"]] == list(range(len(rows)))
    pinned = mlq("predict", "--local", "iris", "--input", str(inputs), "--version", "1", home=trained["home"])
    assert pinned.returncode == 0, pinned.stderr
    assert json.loads(pinned.stdout)["version"] == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"--algorithm": "deep_forest"}, "valid algorithms: logistic_regression"),
        ({"--target": "kind"}, "'kind'"),
        ({"--params": "{epochs: 3"}, "--params is not valid JSON"),
        ({"--params": '{"epochs": 0}'}, "epochs"),
    ],
    ids=["unknown algorithm", "missing target column", "params not json", "params out of range"],
)
def test_a_bad_training_request_exits_non_zero_with_a_one_line_reason(
    trained: dict[str, Any], change: dict[str, Any], reason: str
) -> None:
    options = {"--data": str(trained["data"]), "--target": "species", "--algorithm": "mlp", "--model": "iris", **change}
    result = mlq("train", "--local", *[x for item in options.items() for x in item], home=trained["home"])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and reason in lines[0]
    assert result.stdout == ""


def test_predicting_rows_with_a_wrong_type_names_the_row_and_column(trained: dict[str, Any]) -> None:
    inputs = trained["tmp"] / "bad_rows.json"
    good = {"sepal_length": 5.0, "sepal_width": 3.0, "petal_length": 1.4, "petal_width": 0.2, "color": "red"}
    inputs.write_text(json.dumps({"inputs": [good, {**good, "petal_length": "long"}]}))
    result = mlq("predict", "--local", "iris", "--input", str(inputs), home=trained["home"])
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "petal_length" in result.stderr and "1" in result.stderr


def test_importing_the_client_and_the_cli_loads_no_training_library() -> None:
    code = (
        "import sys, mlqueue, mlqueue.cli; "
        "print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'numpy', 'training') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_mlq_jobs_list_filters_by_every_job_type_the_api_knows() -> None:
    from mlqueue.cli import JOB_TYPES
    from store.contract import JobType

    assert set(JOB_TYPES) == {t.value for t in JobType}
