"""Read an uploaded CSV a chunk of rows at a time, from any row boundary a checkpoint recorded. Stdlib only.

Only one chunk is ever in memory, so a batch worker scores a file of any length in bounded memory. Each chunk says
where the next one starts (`end`, the text stream's `tell()` right after its last row), so a resumed attempt
`seek()`s there and never reads a row twice or skips one. Rows are parsed by the csv module exactly as the upload
was checked (store/datasets.py): the same blank-line rule, so the row count matches the dataset's `rows`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Chunk:
    """Rows [first, first + len(rows)) of the file, as text cells, and where the next chunk starts."""

    first: int
    rows: list[list[str]]
    end: int


def read_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return [name.strip() for name in next(csv.reader(fh))]


def chunks(path: Path, chunk_rows: int, start: int = 0, first_row: int = 0) -> Iterator[Chunk]:
    """Chunks of up to `chunk_rows` rows, from byte position `start` (0: just after the header)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        # readline, not iteration: tell() is refused after next() on a text file. The csv reader asks for a
        # line only when it needs one, so after a row, the file's position is exactly that row's end.
        lines = iter(fh.readline, "")
        reader = csv.reader(lines, strict=True)
        next(reader)  # the header
        if start:
            fh.seek(start)
        row = first_row
        while True:
            rows: list[list[str]] = []
            for record in reader:
                if record:  # blank lines are not rows, as at upload
                    rows.append(record)
                    if len(rows) == chunk_rows:
                        break
            if not rows:
                return
            yield Chunk(row, rows, fh.tell())
            row += len(rows)
