"""Ports of the servers the tests start, without the race of picking a free port and binding it later.

A server that can bind port 0 does so and reports the port the kernel gave it: gunicorn is started with
`-b 127.0.0.1:0` and its port is read from its own log line "Listening at: http://127.0.0.1:PORT" (see
`gunicorn_port`). redis-server cannot report a port 0 it bound on TCP, and `mlq api` / `mlq dev` take a port of 1 or
more: for those `free_port()` picks one, and the caller retries with another one if the server then fails to bind it
(PrivateRedis.start, the `mlq api` fixture of test_client_cli.py).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

GUNICORN_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
# What a server's log says when its port was taken between free_port() and its own bind.
PORT_TAKEN = ("Address already in use", "Connection in use")


def free_port() -> int:
    """A port nobody listens on right now; someone may take it before the caller binds it (retry then)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(log_text: str) -> bool:
    return any(marker in log_text for marker in PORT_TAKEN)


def gunicorn_port(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 60.0) -> int:
    """The port a gunicorn started with `-b 127.0.0.1:0` listens on, read from its log as soon as it says so."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        found = GUNICORN_LISTENING.search(text)
        if found:
            return int(found.group(1))
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not say which port it listens on:\n{text[-3000:]}")
        time.sleep(0.05)
