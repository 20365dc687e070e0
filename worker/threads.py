"""How many threads the numeric libraries of a worker process start: set before they load, or it is too late.

torch sizes its OpenMP pool, and numpy's BLAS its own, from these variables when the library is loaded;
`torch.set_num_threads` later resizes torch's pool only, not a BLAS pool numpy or scikit-learn already started.
The launcher runs one worker process per device or CPU slot, so each should use MLQ_TORCH_THREADS threads:
left alone, every process starts one thread per core and they fight over the same cores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# RAYON_NUM_THREADS: the `tokenizers` library's pool (an uploaded text model's tokenizer, training/onnx_text.py).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


def thread_env(torch_threads: int, env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to `env`: each one not set there yet (an operator's own value wins)."""
    return {name: str(torch_threads) for name in THREAD_VARIABLES if not env.get(name)}


def limit_threads(torch_threads: int) -> None:
    """Set them in this process (and the children it forks); call before torch, numpy or sklearn is imported."""
    os.environ.update(thread_env(torch_threads, os.environ))
