"""Batch prediction without queues: chunked reading from checkpointed offsets, CSV escaping, Parquet parts, and
the scores of a chunk compared with a Predictor's online answers."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from store.batch_format import OutputColumns, assemble, escape_cell, write_part
from training.pipeline import train_model
from training.predictor import Predictor
from training.predictors import load_predictor
from training.registry import ModelRegistry
from worker.batch_reader import chunks, read_header
from worker.batch_scoring import score_chunk


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_chunks_resumed_from_a_recorded_offset_read_every_row_exactly_once(tmp_path: Path) -> None:
    body = "".join(
        f'{i},"text, with ""quotes""\nand a newline {i}"\n' + ("\n" if i % 7 == 0 else "") for i in range(103)
    )
    path = write(tmp_path / "d.csv", "\ufeffid,note\r\n" + body)
    assert read_header(path) == ["id", "note"]
    whole = [row for chunk in chunks(path, 10) for row in chunk.rows]
    assert [int(r[0]) for r in whole] == list(range(103))
    assert whole[5][1] == 'text, with "quotes"\nand a newline 5'
    # Stop after any chunk and go on from its `end`: together, every row once, in order.
    for stop_after in (1, 4, 10):
        first = list(chunks(path, 10))[:stop_after]
        rest = list(chunks(path, 7, start=first[-1].end, first_row=first[-1].first + len(first[-1].rows)))
        rows = [row for c in first + rest for row in c.rows]
        assert rows == whole
        assert rest[0].first == 10 * stop_after if rest else True


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-1.5", "-1.5"),
        ("+3e2", "+3e2"),
        ("plain", "plain"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_cells_that_would_run_as_formulas_are_escaped_and_numbers_are_not(cell: str, shown: str) -> None:
    assert escape_cell(cell) == shown


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    tmp = tmp_path_factory.mktemp("iris")
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame.columns = ["sl", "sw", "pl", "pw"]
    frame["site"] = np.where(np.arange(len(frame)) % 2 == 0, "north", "south")
    frame["species"] = iris.target_names[iris.target]
    frame.to_csv(tmp / "iris.csv", index=False)
    registry = ModelRegistry(tmp / "models")
    train_model(
        data_path=tmp / "iris.csv",
        target="species",
        algorithm="logistic_regression",
        model_name="iris",
        registry=registry,
    )
    return load_predictor(registry, "default", "iris", 1)


def test_a_chunk_scores_like_online_predict_and_unscorable_rows_get_an_error(iris_model: Predictor) -> None:
    header = ["id", "sl", "sw", "pl", "pw", "site"]
    records = [
        ["a", "5.1", "3.5", "1.4", "0.2", "north"],
        ["=cmd", "6.3", "", "6.0", "2.5", "NA"],
        ["c", "abc", "3.0", "4.5", "1.5", "south"],
        ["d", "7.0", "3.2", "inf", "1.4", "west"],
    ]
    positions = {name: i for i, name in enumerate(header)}
    columns = OutputColumns(["id"], iris_model.task, iris_model.classes, "both")
    result = score_chunk(iris_model, records, positions, columns)
    online = iris_model.predict([[5.1, 3.5, 1.4, 0.2, "north"], [6.3, None, 6.0, 2.5, None]], {"output": "both"})
    assert result.labels[:2] == [p["label"] for p in online]
    for j, cls in enumerate(iris_model.classes or []):
        assert [result.proba[j][0], result.proba[j][1]] == [online[0]["proba"][cls], online[1]["proba"][cls]]
    assert result.errors[:2] == ["", ""]
    assert result.errors[2] == "feature 'sl': expected a number, got 'abc'"
    assert result.errors[3] == "feature 'pl': expected a finite number, got 'inf'"
    assert result.labels[2:] == [None, None]
    assert columns.names == ["id", "label", "proba_setosa", "proba_versicolor", "proba_virginica", "error"]


def test_parts_assemble_into_one_csv_and_one_parquet_with_every_row_in_order(
    iris_model: Predictor, tmp_path: Path
) -> None:
    positions = {name: i for i, name in enumerate(["id", "sl", "sw", "pl", "pw", "site"])}
    for fmt in ("csv", "parquet"):
        columns = OutputColumns(["id"], iris_model.task, iris_model.classes, "label")
        parts = []
        for k in range(3):
            records = [[f"-{k}{i}" if i else "=1+1", "5.0", "3.0", "1.5", "0.2", "x"] for i in range(4)]
            parts.append(tmp_path / f"part-{k}.{fmt}")
            write_part(score_chunk(iris_model, records, positions, columns), parts[-1], fmt)
        final = tmp_path / f"out.{fmt}"
        size, sha = assemble(parts, columns, fmt, final)
        assert size == final.stat().st_size and len(sha) == 64
        if fmt == "csv":
            rows = list(csv.reader(io.StringIO(final.read_text())))
            assert rows[0] == ["id", "label", "error"]
            assert [r[0] for r in rows[1:5]] == ["'=1+1", "-01", "-02", "-03"]
            assert len(rows) == 13 and {r[1] for r in rows[1:]} == {"setosa"}
        else:
            frame = pd.read_parquet(final)
            assert list(frame.columns) == ["id", "label", "error"] and len(frame) == 12
            assert frame["id"].tolist()[:2] == ["=1+1", "-01"]  # Parquet is typed data: nothing to escape


def test_a_matching_checkpoint_resumes_and_a_damaged_or_foreign_one_starts_over(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    from store.contract import BatchPredictRequest
    from worker.batch import CHECKPOINT, BatchRun

    runtime: Any = SimpleNamespace(settings=SimpleNamespace(checkpoints_dir=tmp_path))
    request = BatchPredictRequest(job_id="job_" + "0" * 26, tenant="t", model="m", version=1, dataset_id="ds")
    run = BatchRun(runtime, request, should_stop=None)  # type: ignore[arg-type]
    fingerprint = run.fingerprint({"sha256": "abc"})
    assert run.load_state(fingerprint)["parts"] == 0
    good = {"fingerprint": fingerprint, "parts": 1, "offset": 5, "rows_done": 3, "rows_failed": 0, "first_error": None}
    run.part(0).write_text("row\n")
    (run.work / CHECKPOINT).write_text(json.dumps(good))
    assert run.load_state(fingerprint)["rows_done"] == 3
    for damaged in (
        "[1, 2]",
        "{not json",
        json.dumps({"fingerprint": fingerprint, "parts": 1}),
        json.dumps({**good, "parts": 2}),  # names a part that is not there
        json.dumps(good),
    ):  # the last: another dataset's checkpoint
        run.part(0).write_text("row\n")
        (run.work / CHECKPOINT).write_text(damaged)
        other = fingerprint if damaged != json.dumps(good) else run.fingerprint({"sha256": "changed"})
        assert run.load_state(other)["rows_done"] == 0, damaged
        assert not run.part(0).exists()  # started over: the old parts are gone
