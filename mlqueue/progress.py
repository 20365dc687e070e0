"""Progress lines for the terminal: `epoch 3/20 loss 0.41 val_loss 0.45`, a bar and an ETA. Stdlib only.

Progress always goes to stderr, so stdout keeps only data. On a terminal one line is redrawn in place (`\\r`), cut
to the terminal's width (a line that wrapped could not be redrawn, and each update would flood the screen); into a
pipe or a file each change is its own line, whole, which reads well in CI logs.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, TextIO

BAR_WIDTH = 20


def epoch_text(progress: dict[str, Any], message: bool = True) -> str:
    """`epoch 3/20 loss 0.41 val_loss 0.45` from whatever of those fields is present, then the message."""
    parts = []
    if progress.get("epoch") is not None:
        epochs = progress.get("epochs")
        parts.append(f"epoch {progress['epoch']}/{epochs}" if epochs else f"epoch {progress['epoch']}")
    for key in ("loss", "val_loss"):
        value = progress.get(key)
        if isinstance(value, int | float):
            parts.append(f"{key} {value:.4g}")
    said = str(progress.get("message") or "") if message else ""
    if said and said not in " ".join(parts):  # workers often repeat "epoch 3/20" as the message
        parts.append(said)
    return " ".join(parts)


def format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def terminal_width(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to (COLUMNS wins, as in shutil); 80 if it cannot be told."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return int(os.environ.get("COLUMNS") or 0) or columns or shutil.get_terminal_size().columns


def short_id(job_id: str) -> str:
    """`job_…k3v9q2` : the prefix and the id's last characters (its random part), enough to tell jobs apart."""
    prefix, _, rest = job_id.partition("_")
    return f"{prefix}_…{rest[-6:]}" if rest and len(rest) > 8 else job_id


class JobProgress:
    """Draws a job's state each time `update(job)` is called; `close()` ends the line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._first: tuple[float, float] | None = None  # (when, fraction) at the first running observation
        self._width = 0
        self._last = ""

    def eta(self, fraction: float) -> float | None:
        """Seconds left, extrapolated from the progress made since we started watching (no server clock)."""
        now = time.monotonic()
        if self._first is None:
            self._first = (now, fraction)
            return None
        t0, f0 = self._first
        if fraction <= f0 or fraction >= 1.0:
            return None
        return (now - t0) / (fraction - f0) * (1.0 - fraction)

    def line(self, job: dict[str, Any], width: int | None = None) -> str:
        """The job's state in one line; within `width` columns when given (a terminal's), dropping by priority."""
        status = job.get("status", "?")
        progress = job.get("progress") or {}
        job_id = str(job.get("id", ""))
        raw = progress.get("fraction")
        fraction = float(raw) if isinstance(raw, int | float) and status == "running" else None
        percent = f"{fraction:4.0%}".strip() if fraction is not None else ""
        text = epoch_text(progress, message=False)
        said = epoch_text(progress)[len(text) :].strip()
        eta = ""
        if fraction is not None:
            left = self.eta(fraction)
            if left is not None:
                eta = f"ETA {format_eta(left)}"
        # The bar and the full id say least (the user typed the id): they give way first; then the message is cut
        # at the end; the epoch, losses and ETA stay. A line that wrapped could not be redrawn in place.
        for bar_width, id_text in ((BAR_WIDTH, job_id), (10, job_id), (0, job_id), (0, short_id(job_id))):
            bar = ""
            if fraction is not None and bar_width:
                filled = int(round(max(0.0, min(1.0, fraction)) * bar_width))
                bar = f"[{'#' * filled}{'.' * (bar_width - filled)}]"
            line = " ".join(part for part in (id_text, status, bar, percent, text, eta, said) if part)
            if width is None or len(line) <= width:
                return line
        assert width is not None  # an unlimited line was returned at once
        return line[: max(width - 1, 0)] + "…"

    def update(self, job: dict[str, Any]) -> None:
        # One column less than the terminal: the last column would wrap on some terminals.
        width = terminal_width(self.stream) - 1 if self.live else None
        text = self.line(job, width)
        if text == self._last:  # the same state seen twice (the first poll repeats the submit answer)
            return
        self._last = text
        if self.live:
            # Pad with spaces so a shorter line fully covers the previous one.
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
