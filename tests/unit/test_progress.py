"""The terminal progress line: one line redrawn in place that never wraps, whatever the terminal's width."""

from __future__ import annotations

import io

import pytest

from mlqueue.progress import JobProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def running(epoch: int) -> dict[str, object]:
    return {
        "id": "job_" + "a" * 26,
        "status": "running",
        "progress": {
            "fraction": epoch / 20,
            "epoch": epoch,
            "epochs": 20,
            "loss": 0.123456,
            "val_loss": 0.2345,
            "message": "a long message from the worker that says quite a lot about this epoch",
        },
    }


def test_on_an_80_column_terminal_every_redraw_fits_in_79_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    screen = Terminal()
    bar = JobProgress(screen)
    for epoch in range(1, 6):
        bar.update(running(epoch))
    bar.close()
    redraws = screen.getvalue().rstrip("\n").split("\r")[1:]
    assert len(redraws) == 5
    assert all(len(line) <= 79 for line in redraws)
    assert redraws[-1].startswith("job_") and redraws[-1].rstrip().endswith("…")


def test_into_a_pipe_each_change_is_a_whole_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    pipe = io.StringIO()
    bar = JobProgress(pipe)
    bar.update(running(1))
    bar.update(running(1))  # the same state twice is drawn once
    bar.update(running(2))
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 2 and "epoch 2/20" in lines[1] and len(lines[1]) > 40
