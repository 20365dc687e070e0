"""Uploaded CSV datasets on the artifact store. Stdlib only: the API writes them, workers read them.

Layout: <root>/<tenant>/<dataset id>/{data.csv, meta.json}. An upload is streamed to `.tmp-<uuid>/` while its
bytes are counted and hashed, parsed once with the csv module (rows, dtypes, missing values), and then renamed
into place: a half-written or refused upload is never visible. Ids come from the server and are checked
against a strict pattern before any path is built.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from store.ids import is_dataset_id, new_id
from training.errors import DataError, MLQError, ResourceNotFound
from training.registry import NAME_RE

CHUNK = 1 << 16
# What pandas.read_csv reads as missing by default, so the counts here match what training will see.
NA_VALUES = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
# Distinct values per column are counted up to this many: enough to tell a constant column (a target with one
# class) from a varied one at train submit, without holding a column's values in memory.
DISTINCT_CAP = 20
NUMBER_RE = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*|\s*[+-]?(inf|Inf|INF|infinity)\s*")


class DatasetTooLarge(MLQError):
    """Raised when an upload is larger than a configured maximum (MLQ_MAX_UPLOAD_MB, MLQ_MAX_ROWS, MLQ_MAX_COLUMNS)."""

    code = "too_large"
    status = 413


class TooManyRows(DatasetTooLarge):
    """Raised when an uploaded CSV has more data rows than MLQ_MAX_ROWS."""

    code = "too_many_rows"


class TooManyColumns(DatasetTooLarge):
    """Raised when an uploaded CSV has more columns than MLQ_MAX_COLUMNS."""

    code = "too_many_columns"


def _now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def describe_csv(
    path: Path, max_rows: int | None = None, max_columns: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """(data rows, [{"name", "dtype": "number"|"string", "missing", "distinct"}]) of a CSV; DataError naming
    the line. `distinct` counts the different non-missing values as written, up to DISTINCT_CAP.

    DatasetTooLarge as soon as the header has more than `max_columns` columns or the data more than `max_rows`
    rows, so a refused file is not read to its end.
    """
    _check_not_json(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(
                    "the file is empty; upload a CSV with a header row and at least one data row",
                    errors=[{"loc": ["file"], "msg": "empty file"}],
                ) from None
            names = [h.strip() for h in header]
            _check_separator(names)
            if max_columns is not None and len(names) > max_columns:
                raise TooManyColumns(
                    f"the CSV has {len(names)} columns, more than the limit of {max_columns} (MLQ_MAX_COLUMNS); "
                    "drop columns or raise the limit",
                    errors=[{"loc": ["file", "line", 1], "msg": f"at most {max_columns} columns"}],
                )
            _check_header(names)
            missing = [0] * len(names)
            numeric = [True] * len(names)
            seen: list[set[str]] = [set() for _ in names]
            rows = 0
            for record in reader:
                if not record:  # blank lines are skipped, as pandas does
                    continue
                if len(record) != len(names):
                    raise DataError(
                        f"line {reader.line_num} has {len(record)} fields, expected {len(names)} like the header; "
                        "check for unquoted commas or a truncated row",
                        errors=[{"loc": ["file", "line", reader.line_num], "msg": "wrong number of fields"}],
                    )
                rows += 1
                if max_rows is not None and rows > max_rows:
                    raise TooManyRows(
                        f"the CSV has more than {max_rows} data rows, the limit (MLQ_MAX_ROWS); upload fewer rows "
                        "or raise the limit",
                        errors=[{"loc": ["file", "line", reader.line_num], "msg": f"at most {max_rows} rows"}],
                    )
                for i, value in enumerate(record):
                    if value in NA_VALUES:
                        missing[i] += 1
                        continue
                    if len(seen[i]) < DISTINCT_CAP:
                        seen[i].add(value)
                    if numeric[i] and not NUMBER_RE.fullmatch(value):
                        numeric[i] = False
    except csv.Error as exc:
        raise DataError(
            f"the CSV cannot be parsed at line {reader.line_num}: {exc}",
            errors=[{"loc": ["file", "line", reader.line_num], "msg": str(exc)}],
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"the file is not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8 CSV",
            errors=[{"loc": ["file"], "msg": "not UTF-8"}],
        ) from None
    if rows == 0:
        raise DataError("the CSV has a header but no data rows", errors=[{"loc": ["file"], "msg": "no rows"}])
    columns = [
        {
            "name": n,
            "dtype": "number" if numeric[i] and missing[i] < rows else "string",
            "missing": missing[i],
            "distinct": len(seen[i]),
        }
        for i, n in enumerate(names)
    ]
    return rows, columns


# What a spreadsheet in another locale, or a database export, separates with instead of commas.
OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _check_separator(names: list[str]) -> None:
    """Refuse a header that is one column holding another separator: read as CSV, `a;b;c` is one column named
    "a;b;c", and every training on it fails far from the cause. (The workers read commas, so sniffing here alone would
    make the upload disagree with the training.)"""
    if len(names) != 1:
        return
    for sep, word in OTHER_SEPARATORS.items():
        if sep in names[0]:
            raise DataError(
                f"the header is one column named {names[0][:60]!r}: the file looks separated by {word}, not commas; "
                'save it as comma-separated CSV (Excel: "CSV UTF-8 (comma delimited)"; pandas: '
                "pd.read_csv(path, sep=...).to_csv(new_path, index=False))",
                errors=[{"loc": ["file", "line", 1], "msg": f"separated by {word}, not commas"}],
            )


def _check_not_json(path: Path) -> None:
    """A JSON file read as CSV is "a header but no data rows" (or a garbled header): say what it is instead."""
    with path.open("rb") as fh:
        start = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if start[:1] in (b"{", b"["):
        raise DataError(
            "the file looks like JSON, not CSV; upload a CSV with a header row and one row per line "
            "(pandas: pd.read_json(path).to_csv(new_path, index=False))",
            errors=[{"loc": ["file"], "msg": "JSON, not CSV"}],
        )


def _check_header(names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name:
            raise DataError(
                f"column {i + 1} of the header has no name; every column needs a name",
                errors=[{"loc": ["file", "line", 1], "msg": f"column {i + 1} has no name"}],
            )
        if name in seen:
            raise DataError(
                f"the header names column {name!r} twice; column names must be unique",
                errors=[{"loc": ["file", "line", 1], "msg": f"duplicate column {name!r}"}],
            )
        seen.add(name)


class DatasetStore:
    """Save, read, list and delete a tenant's datasets under `root`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _tenant_dir(self, tenant: str) -> Path:
        if not NAME_RE.fullmatch(tenant):
            raise ResourceNotFound(f"unknown tenant {tenant!r}")
        return self.root / tenant

    def _dir(self, tenant: str, dataset_id: str) -> Path:
        if not is_dataset_id(dataset_id):
            raise ResourceNotFound(
                f"no dataset {dataset_id!r}: dataset ids look like ds_01hx…",
                errors=[{"loc": ["dataset"], "msg": "not found"}],
            )
        path = self._tenant_dir(tenant) / dataset_id
        if not (path / "meta.json").is_file():
            raise ResourceNotFound(
                f"no dataset {dataset_id!r}; list yours with GET /v1/datasets",
                errors=[{"loc": ["dataset"], "msg": "not found"}],
            )
        return path

    def save(
        self,
        tenant: str,
        stream: IO[bytes],
        name: str | None,
        max_bytes: int,
        max_rows: int | None = None,
        max_columns: int | None = None,
    ) -> dict[str, Any]:
        """Stream `stream` to disk (at most `max_bytes`, else DatasetTooLarge), describe it, and publish it."""
        tenant_dir = self._tenant_dir(tenant)
        tenant_dir.mkdir(parents=True, exist_ok=True)
        tmp = tenant_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            digest, size = hashlib.sha256(), 0
            with (tmp / "data.csv").open("wb") as fh:
                while chunk := stream.read(CHUNK):
                    if b"\x00" in chunk:  # the csv module would read it as data; no text CSV holds one
                        raise DataError(
                            f"the file holds a NUL byte (near byte {size + chunk.index(0)}); it is not a text CSV",
                            errors=[{"loc": ["file"], "msg": "NUL byte"}],
                        )
                    size += len(chunk)
                    if size > max_bytes:
                        raise DatasetTooLarge(
                            f"the upload is larger than the limit of {max_bytes} bytes (MLQ_MAX_UPLOAD_MB); "
                            "upload a smaller file or raise the limit"
                        )
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            rows, columns = describe_csv(tmp / "data.csv", max_rows, max_columns)
            dataset_id = new_id("ds")
            meta = {
                "id": dataset_id,
                "name": name or dataset_id,
                "rows": rows,
                "columns": columns,
                "sha256": digest.hexdigest(),
                "size_bytes": size,
                "created_at": _now(),
            }
            (tmp / "meta.json").write_text(json.dumps(meta))
            os.rename(tmp, tenant_dir / dataset_id)
            return meta
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def get(self, tenant: str, dataset_id: str) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((self._dir(tenant, dataset_id) / "meta.json").read_text())
        return meta

    def path(self, tenant: str, dataset_id: str) -> Path:
        return self._dir(tenant, dataset_id) / "data.csv"

    def list(self, tenant: str) -> list[dict[str, Any]]:
        """Every dataset of the tenant, newest first (ids sort by creation time)."""
        tenant_dir = self._tenant_dir(tenant)
        if not tenant_dir.is_dir():
            return []
        out = []
        for entry in sorted(tenant_dir.iterdir(), key=lambda p: p.name, reverse=True):
            if is_dataset_id(entry.name) and (entry / "meta.json").is_file():
                out.append(json.loads((entry / "meta.json").read_text()))
        return out

    def delete(self, tenant: str, dataset_id: str) -> None:
        path = self._dir(tenant, dataset_id)
        # Rename first so the dataset disappears at once, even if removing its files takes a while.
        trash = path.parent / f".trash-{uuid.uuid4().hex}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
