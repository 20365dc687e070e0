"""Worker processes size torch's and BLAS's thread pools from MLQ_TORCH_THREADS before those libraries load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from worker.threads import thread_env

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, os, sys
import worker.app
import torch
print(json.dumps({"env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                  "OPENBLAS_NUM_THREADS")}, "torch": torch.get_num_threads()}))
"""


def test_an_operators_own_thread_variables_are_kept() -> None:
    assert thread_env(2, {"OMP_NUM_THREADS": "4"}) == {
        "MKL_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
        "RAYON_NUM_THREADS": "2",
    }


def test_importing_the_worker_app_sets_the_thread_variables_before_torch_loads(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    # Importing the app connects to nothing: a Redis URL nobody listens on is fine.
    env.update(
        MLQ_TORCH_THREADS="1", MLQ_HOME=str(tmp_path), MLQ_REDIS_URL="redis://127.0.0.1:1/0", PYTHONPATH=str(ROOT)
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    ).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["env"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # torch read OMP_NUM_THREADS when it loaded (nobody called set_num_threads yet); it caps it at the cores
    assert seen["torch"] == 1
