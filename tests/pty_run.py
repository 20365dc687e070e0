"""Run a command on a pseudo-terminal of a fixed size and read what it drew, as a person's terminal would show it.

`mlq` measures the terminal it writes to (tables, the live progress line, rich's search table): only a real
terminal device exercises that, never a pipe.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Sequence

# CSI sequences (colours, cursor moves, erase) and OSC titles: they take no columns on the screen.
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]")


def set_size(fd: int, columns: int, rows: int = 40) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def run_in_pty(argv: Sequence[str], columns: int, env: dict[str, str], timeout_s: float = 180.0) -> tuple[int, str]:
    """(exit code, everything written to the terminal) of `argv` run with stdin, stdout and stderr on one pty."""
    master, slave = pty.openpty()
    set_size(slave, columns)
    clean_env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    clean_env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave, env=clean_env, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise TimeoutError(f"{argv} still ran after {timeout_s} s; it wrote:\n{b''.join(chunks).decode()[-3000:]}")
        return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def screen_lines(text: str) -> list[str]:
    """The lines as drawn: escapes removed, split at every line end and carriage return (a redrawn line counts as
    each of its versions)."""
    plain = ESCAPES.sub("", text)
    return [part for line in re.split(r"\r\n|\n", plain) for part in line.split("\r")]


def too_wide(text: str, columns: int) -> list[str]:
    return [line for line in screen_lines(text) if len(line) > columns]
