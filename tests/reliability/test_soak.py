"""The chaos soak, short: `python -m bench.soak --minutes 2` on a stack of its own (Redis with AOF, the API, 2 train,
1 inference and 1 batch worker) must end with no violated invariant; a worker is killed, the API and Redis are
restarted at least once each (bench/soak.py), and the invariants are checked from Redis and the store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_two_minute_soak_under_chaos_violates_no_invariant(tmp_path: Path) -> None:
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        pytest.skip("redis-server is not installed")
    argv = [sys.executable, "-m", "bench.soak", "--minutes", "2", "--workdir", str(tmp_path)]
    done = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=1500
    )
    report = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "violations: 0" in done.stdout, report
    for action in ("SIGKILL", "API restarts", "Redis restarts"):
        assert action in done.stdout, report
    assert "succeeded" in done.stdout
