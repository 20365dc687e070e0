"""DatasetStore on a tmp directory: streamed saves, limits, CSV errors naming the line, safe ids."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from store.datasets import DISTINCT_CAP, DatasetStore, DatasetTooLarge
from training.errors import DataError, ResourceNotFound

CSV = b"x,y,label\n1,2.5,a\n3,NA,b\n-4e2,,a\n"


def test_a_saved_dataset_has_its_rows_dtypes_missing_counts_and_files(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    meta = store.save("t1", io.BytesIO(CSV), "mini", max_bytes=1000)
    assert meta["rows"] == 3 and meta["name"] == "mini" and meta["size_bytes"] == len(CSV)
    assert meta["columns"] == [
        {"name": "x", "dtype": "number", "missing": 0, "distinct": 3},
        {"name": "y", "dtype": "number", "missing": 2, "distinct": 1},
        {"name": "label", "dtype": "string", "missing": 0, "distinct": 2},
    ]
    assert store.path("t1", meta["id"]).read_bytes() == CSV
    assert store.get("t1", meta["id"]) == meta
    assert [m["id"] for m in store.list("t1")] == [meta["id"]]


def test_an_upload_over_the_limit_leaves_nothing_behind(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    with pytest.raises(DatasetTooLarge):
        store.save("t1", io.BytesIO(CSV * 100), None, max_bytes=100)
    assert store.list("t1") == []
    assert list((tmp_path / "t1").iterdir()) == []


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"a,b\n1,2\n3\n", "line 3"),
        (b'a,b\n1,"unterminated\n', "line"),
        (b"a,a\n1,2\n", "twice"),
        (b"a,\n1,2\n", "no name"),
        (b"\xff\xfe,b\n1,2\n", "UTF-8"),
        (b"a,b\n", "no data rows"),
    ],
)
def test_unusable_csvs_are_refused_with_a_message_saying_where(tmp_path: Path, data: bytes, words: str) -> None:
    with pytest.raises(DataError) as err:
        DatasetStore(tmp_path).save("t1", io.BytesIO(data), None, max_bytes=1000)
    assert words in err.value.message


def test_ids_and_tenants_are_checked_before_any_path_is_built(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    for bad in ("../x", "ds_../../etc", "/etc/passwd", "ds_" + "a" * 26):
        with pytest.raises(ResourceNotFound):
            store.get("t1", bad)
    with pytest.raises(ResourceNotFound):
        store.list("../t2")


def test_a_deleted_dataset_is_not_found(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    meta = store.save("t1", io.BytesIO(CSV), None, max_bytes=1000)
    store.delete("t1", meta["id"])
    with pytest.raises(ResourceNotFound):
        store.get("t1", meta["id"])


def test_distinct_values_are_counted_only_up_to_the_cap(tmp_path: Path) -> None:
    rows = "".join(f"{i},same\n" for i in range(DISTINCT_CAP + 5))
    meta = DatasetStore(tmp_path).save("t1", io.BytesIO(f"n,c\n{rows}".encode()), "wide", max_bytes=10_000)
    assert [c["distinct"] for c in meta["columns"]] == [DISTINCT_CAP, 1]
