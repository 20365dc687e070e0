"""Progress lines for the terminal: `epoch 3/20 loss 0.41 val_loss 0.45`, a bar and an ETA. Stdlib only.

Progress always goes to stderr, so stdout keeps only data. On a terminal one line is redrawn in place (`\\r`), cut
to the terminal's width (a line that wrapped could not be redrawn, and each update would flood the screen); into a
pipe or a file each change is its own line, whole, which reads well in CI logs.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

BAR_WIDTH = 20


def epoch_text(progress: dict[str, Any]) -> str:
    """`epoch 3/20 loss 0.41 val_loss 0.45` from whatever of those fields is present."""
    parts = []
    if progress.get("epoch") is not None:
        epochs = progress.get("epochs")
        parts.append(f"epoch {progress['epoch']}/{epochs}" if epochs else f"epoch {progress['epoch']}")
    for key in ("loss", "val_loss"):
        value = progress.get(key)
        if isinstance(value, int | float):
            parts.append(f"{key} {value:.4g}")
    message = str(progress.get("message") or "")
    if message and message not in " ".join(parts):  # workers often repeat "epoch 3/20" as the message
        parts.append(message)
    return " ".join(parts)


def format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


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

    def line(self, job: dict[str, Any]) -> str:
        status = job.get("status", "?")
        progress = job.get("progress") or {}
        parts = [f"{job.get('id', '')} {status}"]
        fraction = progress.get("fraction")
        if isinstance(fraction, int | float) and status == "running":
            filled = int(round(max(0.0, min(1.0, fraction)) * BAR_WIDTH))
            parts.append(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}")
        text = epoch_text(progress)
        if text:
            parts.append(text)
        if isinstance(fraction, int | float) and status == "running":
            left = self.eta(float(fraction))
            if left is not None:
                parts.append(f"ETA {format_eta(left)}")
        return " ".join(parts)

    def update(self, job: dict[str, Any]) -> None:
        text = self.line(job)
        if text == self._last:  # the same state seen twice (the first poll repeats the submit answer)
            return
        self._last = text
        if self.live:
            width = shutil.get_terminal_size().columns - 1  # the last column would wrap on some terminals
            if len(text) > width:
                text = text[: max(width - 1, 0)] + "…"
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
