"""One output row per input row for any cell content, and no formula at the start of any line a reader may split
out of a cell (issue 18, finding 2: `ok\\r=cmd` was written unquoted, became a row of its own and ran)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest

from store.batch_format import LINE_BREAK, ChunkResult, OutputColumns, assemble, escape_cell, write_part

BREAKS = ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
FORMULAS = ["=cmd|' /C calc'!A0", "+1+cmd", "-2+3", "@SUM(A1)", "\t=x"]
NASTY = [f"ok{brk}{formula}" for brk in BREAKS for formula in FORMULAS] + [
    "ok\r",
    "\r",
    "\n",
    "\r\n",
    "a\x00b",
    "\x00=x",
    'say "hi", then =go',
    '"\r=x"',
    '"',
    ",",
    "a\r\nb\rc\nd",
    "plain",
    "",
    "-1.5",
    "x\u2028-1.5",
]


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("ok\r=cmd", "ok\r'=cmd"),
        ("ok\n+1+2", "ok\n'+1+2"),
        ("ok\r\n@SUM(A1)", "ok\r\n'@SUM(A1)"),
        ("ok\u2028=x", "ok\u2028'=x"),
        ("ok\u2029-2+3", "ok\u2029'-2+3"),
        ("=a\n=b", "'=a\n'=b"),
        ("\r=x", "'\r'=x"),
        ("n\n-1.5", "n\n-1.5"),  # a number stays a number on every line
        ("a\nb=c", "a\nb=c"),
    ],
)
def test_a_formula_after_any_line_break_inside_a_cell_is_escaped(cell: str, shown: str) -> None:
    assert escape_cell(cell) == shown


def lines_a_naive_reader_sees(text: str) -> list[str]:
    return [line for line in LINE_BREAK.split(text)[::2]]


@pytest.mark.parametrize("where", ["data", "label"])
def test_every_input_row_is_one_output_row_whatever_its_cells_hold(tmp_path: Path, where: str) -> None:
    # Labels come from the model's classes, which come from the training data: just as untrusted as data cells.
    classes = sorted(set(NASTY))
    columns = OutputColumns(["id", "note"], "classification", classes, "label")
    parts = []
    for k in range(2):  # two parts: the records stay whole across the concatenation too
        result = ChunkResult(columns, [[f"r{k}-{i}" for i in range(len(NASTY))], list(NASTY)], len(NASTY))
        result.labels = list(NASTY) if where == "label" else ["setosa"] * len(NASTY)
        if where == "label":
            result.passthrough[1] = ["x"] * len(NASTY)
        parts.append(tmp_path / f"part-{k}.csv")
        write_part(result, parts[-1], "csv")
    final = tmp_path / "out.csv"
    assemble(parts, columns, "csv", final)
    text = final.read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + 2 * len(NASTY)
    assert rows[0] == ["id", "note", "label", "error"]
    assert [r[0] for r in rows[1:]] == [f"r{k}-{i}" for k in range(2) for i in range(len(NASTY))]
    column = 1 if where == "data" else 2
    assert [r[column] for r in rows[1 : 1 + len(NASTY)]] == [escape_cell(c) for c in NASTY]
    frame = pd.read_csv(io.StringIO(text, newline=""), dtype=str, keep_default_na=False)
    assert len(frame) == 2 * len(NASTY)
    # A reader that splits rows on any line break and ignores quotes never sees a line that starts a formula.
    for line in lines_a_naive_reader_sees(text):
        for cell in line.split(","):
            unquoted = cell.lstrip('"')
            assert not unquoted.startswith(("=", "+", "@", "\t")), repr(line)
            assert not unquoted.startswith("-") or unquoted[1:2].isdigit() or unquoted[1:2] == ".", repr(line)
