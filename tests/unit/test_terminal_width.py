"""Tables and progress lines fit the terminal: a wrapped row reads as two, a wrapped progress line cannot be redrawn.

The layout rules are pure functions of a width, tested here at 80 and 120 columns; the progress line is also drawn
on a real pseudo-terminal of each size. tests/integration/test_client_cli.py runs the `mlq` commands on one."""

from __future__ import annotations

import os
import pty
from typing import Any

import pytest
from pty_run import set_size, too_wide

from mlqueue.progress import JobProgress
from mlqueue.search_view import params_text, varying_params
from mlqueue.terminal import Column, Table

JOB_ID = "job_01jf2k3m4n5p6q7r8s9t0v1w2x"
RUNNING: dict[str, Any] = {
    "id": JOB_ID,
    "status": "running",
    "progress": {"fraction": 0.52, "epoch": 31, "epochs": 60, "loss": 0.41234, "val_loss": 0.45678},
}


@pytest.mark.parametrize("columns", [80, 120])
def test_a_running_trainings_line_keeps_epoch_losses_and_eta_within_the_width(columns: int) -> None:
    bar = JobProgress()
    bar.line(RUNNING, columns - 1)  # the first observation starts the ETA's clock
    later = {**RUNNING, "progress": {**RUNNING["progress"], "fraction": 0.6, "epoch": 36}}
    line = bar.line(later, columns - 1)
    assert len(line) <= columns - 1
    for part in ("epoch 36/60", "loss 0.4123", "val_loss 0.4568", "ETA "):
        assert part in line, line


def test_what_gives_way_first_is_the_bar_then_the_full_id() -> None:
    bar = JobProgress()
    wide = bar.line(RUNNING, 200)
    assert JOB_ID in wide and "[" in wide
    narrow = bar.line(RUNNING, 70)
    assert "[" not in narrow and "epoch 31/60" in narrow and "val_loss" in narrow
    assert narrow.startswith("job_…") or JOB_ID in narrow


def test_the_progress_line_on_an_80_column_pseudo_terminal_never_wraps() -> None:
    master, slave = pty.openpty()
    set_size(slave, 80)
    try:
        with os.fdopen(os.dup(slave), "w") as stream:
            bar = JobProgress(stream=stream)
            assert bar.live
            for epoch in range(1, 40, 3):
                bar.update({**RUNNING, "progress": {**RUNNING["progress"], "epoch": epoch, "fraction": epoch / 60}})
            bar.close()
        written = os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "epoch 37/60" in written
    assert not too_wide(written, 80)


def test_a_table_drops_the_least_important_columns_and_cuts_flexible_ones_to_fit() -> None:
    columns = [
        Column("ID", keep=True),
        Column("STATUS", keep=True),
        Column("TYPE", rank=3),
        Column("MODEL", rank=2, flex=True, min_width=10),
        Column("CREATED", rank=1),
        Column("PROGRESS", rank=4, flex=True, min_width=16),
    ]
    rows = [[JOB_ID, "succeeded", "batch_predict", "a-rather-long-model-name", "12-04 16:24:43", "epoch 31/60 " * 4]]
    for width in (80, 120):
        table = Table(columns, rows, width)
        lines = [table.line(r) for r in table.rows]
        assert all(len(line) <= width for line in lines), lines
        assert JOB_ID in lines[1] and "succeeded" in lines[1] and "epoch 31/60" in lines[1]
    assert Table(columns, rows, 80).widths[4] is None  # CREATED goes first
    assert Table(columns, rows, None).line(rows[0]).endswith("epoch 31/60")  # into a pipe: whole rows


def test_a_follow_line_takes_the_tables_columns() -> None:
    table = Table([Column("ID", keep=True), Column("STATUS", keep=True, room=9)], [[JOB_ID, "running"]], 80)
    header, first = (table.line(r) for r in table.rows)
    later = table.line([JOB_ID, "succeeded"])
    assert header.index("STATUS") == first.index("running") == later.index("succeeded")


def test_a_searchs_params_show_what_varies_first() -> None:
    trials = [
        {"params": {"epochs": 20, "early_stopping_patience": 5, "lr": 0.001}},
        {"params": {"epochs": 20, "early_stopping_patience": 5, "lr": 0.01}},
    ]
    varying = varying_params(trials)
    assert varying == ["lr"]
    assert params_text(trials[1]["params"], varying).startswith("lr=0.01 ·")
