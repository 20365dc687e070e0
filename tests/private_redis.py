"""A redis-server of the test run's own, on a free port, so that two test runs on one machine never share data.

The root conftest starts one per test session (MLQ_TEST_REDIS_URL points at it); chaos tests start more of their
own to stop, restart or fill. redis-server cannot bind port 0 and report it, so the first start picks a free port
and, should somebody take it before redis-server binds it, tries again on another one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from ports import free_port, port_taken

PORT_ATTEMPTS = 5


class PrivateRedis:
    """A redis-server subprocess on a fixed port: `.url`, `.stop()`, `.start()` (same port, same --dir)."""

    def __init__(self, directory: Path, appendonly: bool = False, db: int = 0) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.db = db
        self.port = free_port()
        self.log_path = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server")
        assert binary is not None
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--logfile",
            str(self.log_path),
            "--maxmemory-policy",
            "noeviction",
        ]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the server, on another free port if its first one was taken meanwhile; a restart keeps the port
        (clients hold the URL) and the --dir. Returns once it answers PING (and has loaded its data)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start(timeout_s)
                break
            except _PortTaken:
                if self._started_once or attempt == PORT_ATTEMPTS:
                    raise
                self.port = free_port()
                self.log_path.unlink()  # the next try's "Address already in use", if any, is read from a fresh log
        self._started_once = True

    def _start(self, timeout_s: float) -> None:
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        client = self.client(socket_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
                    if self.proc.poll() is not None and port_taken(log):
                        raise _PortTaken(f"port {self.port} was taken:\n{log}")
                    raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, kill: bool = True) -> None:
        """Stop the server: SIGKILL (a crash) by default, else SIGTERM (a clean shutdown)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(timeout=15)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class _PortTaken(RuntimeError):
    pass
