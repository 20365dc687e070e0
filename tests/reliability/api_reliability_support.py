"""Helpers of the tests/reliability/test_api_*, test_malformed_*, test_schemathesis and test_load modules:
the API under a real gunicorn on loopback, and the helpers of tests/integration/api_support.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from api_support import ALICE, BOB, IRIS_CSV, TOKENS, make_settings, register_model, train_body, upload  # noqa: E402

from mlqueue.dev import gunicorn_argv  # noqa: E402

__all__ = ["ALICE", "BOB", "IRIS_CSV", "TOKENS", "make_settings", "register_model", "train_body", "upload",
           "gunicorn", "token_env"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_env(tokens: dict[str, str]) -> str:
    """{token: tenant} → the MLQ_AUTH_TOKENS form `tenant:token,…`."""
    return ",".join(f"{tenant}:{token}" for token, tenant in tokens.items())


@contextmanager
def gunicorn(env: dict[str, str], log_path: Path, extra_args: tuple[str, ...] = (), workers: int = 1) -> Iterator[str]:
    """`api.wsgi:app` under gunicorn as `mlq api` runs it (gevent, api/gunicorn_conf.py) on a free loopback port;
    yields its base URL."""
    port = free_port()
    argv = [*gunicorn_argv("127.0.0.1", port, workers)[:-1], *extra_args, "api.wsgi:app"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
