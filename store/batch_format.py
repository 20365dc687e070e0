"""The output of a batch prediction: its columns, one part file per chunk, and the final file assembled from them.

Columns: the passthrough columns the request named (for joining back), then the predictions (`label`, or `value`,
and `proba_<class>` per class with output proba|both), then `error` (empty when the row was scored). Each chunk is
written as its own part file, renamed into place whole, so a checkpoint that names part N means part N is
complete; the final file is the parts concatenated in order, so every row appears exactly once.

CSV cells that begin with `=`, `+`, `-`, `@`, a tab or a carriage return get a leading `'`, so a spreadsheet
shows them as text instead of running them as formulas (OWASP "CSV injection"); a cell that is a plain number
(`-1.5`, `+3e2`) is left alone: a number is never run, and stays a number for every reader. The same holds for
every line inside a cell: after any line break (CR, LF, CRLF, VT, FF, U+001C-1E, U+0085, U+2028, U+2029) a line
that would start a formula gets its `'` too, for a reader that splits rows on it.

Each row is one CSV record whatever its cells hold: a cell holding a quote, a comma, any control character (CR
and NUL included) or a unicode line separator is quoted (RFC 4180), so every reader sees one output row per input
row. (csv.writer with lineterminator="\n" left a bare CR unquoted: `ok\r=cmd` became a row of its own.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
PROBA_DIGITS = 6  # as online predictions (training/predictor.py)
# What str.splitlines() breaks on: some reader, somewhere, starts a new row at each of them.
LINE_BREAK = re.compile(r"(\r\n|[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029])")
# A field holding one of these is quoted: the delimiter, the quote, every control character, the line separators.
NEEDS_QUOTES = re.compile(r'[",\x00-\x1f\x7f\x85\u2028\u2029]')


def _escape_line(text: str) -> str:
    if text.startswith(FORMULA_START) and not PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def escape_cell(text: str) -> str:
    """`text` as a spreadsheet shows it, never as a formula it would run: at its start and after any line break."""
    pieces = LINE_BREAK.split(_escape_line(text))  # [line, break, line, break, line ...]
    pieces[2::2] = [_escape_line(line) for line in pieces[2::2]]
    return "".join(pieces)


def csv_record(cells: Sequence[str]) -> str:
    """One CSV record (RFC 4180 quoting, "\n" after it): exactly one row for any cell content."""
    return ",".join('"' + c.replace('"', '""') + '"' if NEEDS_QUOTES.search(c) else c for c in cells) + "\n"


def class_key(label: Any) -> str:
    # The label as JSON writes it (1 → "1", True → "true"), like the keys of an online prediction's `proba`.
    return label if isinstance(label, str) else json.dumps(label)


class OutputColumns:
    """The output's column names and types for one request, fixed before the first chunk is scored."""

    def __init__(self, passthrough: list[str], task: str, classes: list[Any] | None, output: str) -> None:
        self.passthrough = passthrough
        self.classification = task == "classification"
        self.classes = classes or []
        self.label = self.classification and output != "proba"
        self.proba = self.classification and output != "label"
        names = list(passthrough)
        if self.label:
            names.append("label")
        if self.proba:
            names += [f"proba_{class_key(c)}" for c in self.classes]
        if not self.classification:
            names.append("value")
        self.names = [*names, "error"]

    def arrow_schema(self) -> Any:
        import pyarrow as pa

        fields = [pa.field(name, pa.string()) for name in self.passthrough]
        if self.label:
            fields.append(pa.field("label", self._label_type()))
        if self.proba:
            fields += [pa.field(f"proba_{class_key(c)}", pa.float64()) for c in self.classes]
        if not self.classification:
            fields.append(pa.field("value", pa.float64()))
        fields.append(pa.field("error", pa.string()))
        return pa.schema(fields)

    def _label_type(self) -> Any:
        import pyarrow as pa

        if all(isinstance(c, bool) for c in self.classes):
            return pa.bool_()
        if all(isinstance(c, int) and not isinstance(c, bool) for c in self.classes):
            return pa.int64()
        if all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.classes):
            return pa.float64()
        return pa.string()


class ChunkResult:
    """One chunk's output columns: passthrough text, predictions (None where a row failed), errors."""

    def __init__(self, columns: OutputColumns, passthrough: list[list[str]], n: int) -> None:
        self.columns = columns
        self.passthrough = passthrough  # one list of cells per passthrough column
        self.n = n
        self.labels: list[Any] = [None] * n
        self.proba: list[list[float | None]] = [[None] * n for _ in columns.classes] if columns.proba else []
        self.values: list[float | None] = [None] * n
        self.errors: list[str] = [""] * n

    def as_columns(self) -> list[list[Any]]:
        out: list[list[Any]] = list(self.passthrough)
        if self.columns.label:
            out.append(self.labels)
        out += self.proba
        if not self.columns.classification:
            out.append(self.values)
        out.append(self.errors)
        return out


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool):
        return json.dumps(value)
    return escape_cell(str(value))


def _replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def write_part(result: ChunkResult, path: Path, fmt: str) -> None:
    """Write one chunk's rows to `path` (no header for CSV), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    columns = result.as_columns()
    if fmt == "csv":
        text = "".join(csv_record([_csv_text(v) for v in row]) for row in zip(*columns, strict=True))
        tmp.write_bytes(text.encode("utf-8"))  # bytes: write_text would turn "\n" into the platform's newline
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = result.columns.arrow_schema()
        arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)]
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), tmp)
    _replace(tmp, path)


def assemble(parts: Sequence[Path], columns: OutputColumns, fmt: str, final: Path) -> tuple[int, str]:
    """Concatenate the parts in order into `final` (atomically); returns (size in bytes, sha256)."""
    tmp = final.with_name(final.name + ".tmp")
    if fmt == "csv":
        with tmp.open("wb") as out:
            out.write(csv_record([escape_cell(n) for n in columns.names]).encode("utf-8"))
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(1 << 20):
                        out.write(block)
    else:
        import pyarrow.parquet as pq

        # One row group per chunk: only one part's rows are in memory at a time.
        with pq.ParquetWriter(tmp, columns.arrow_schema()) as writer:
            for part in parts:
                writer.write_table(pq.read_table(part))
    digest = hashlib.sha256()
    with tmp.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    size = tmp.stat().st_size
    _replace(tmp, final)
    return size, digest.hexdigest()
