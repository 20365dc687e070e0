"""The compiled preprocessing against the ColumnTransformer it replaces, on the registered versions' own rows.

`python -m bench.preprocessing [MLQ_HOME]` prints it for every model there; `python -m bench` runs it after
training (row "P" of its table). One process, one thread, CPU time, best of a few repeats: the machine is shared.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.predictor import Predictor
from training.predictors import load_predictor
from training.registry import ModelRegistry
from training.rows import frame_from_rows


def per_call_us(call: Callable[[], Any], seconds: float = 0.3, repeats: int = 3) -> float:
    """CPU µs per call of `call` (this thread's CPU time, so time spent waiting for a shared core does not
    count), the fastest of `repeats` timings."""
    call()
    best = float("inf")
    for _ in range(repeats):
        calls, started, cpu = 0, time.perf_counter(), time.thread_time()
        while time.perf_counter() - started < seconds / repeats:
            call()
            calls += 1
        best = min(best, (time.thread_time() - cpu) / calls * 1e6)
    return best


def compare(predictor: Predictor, rows: list[Any]) -> dict[str, Any]:
    """µs per call for `rows`: the ColumnTransformer alone (frame already built), frame + transformer, compiled."""
    assert predictor.compiled is not None, f"{predictor.name}'s preprocessing did not compile"
    compiled, pre = predictor.compiled, predictor.preprocessor
    features, dtypes = predictor.features, predictor.feature_dtypes
    frame = frame_from_rows(rows, features, dtypes)
    assert np.allclose(compiled.transform(rows), pre.transform(frame), rtol=1e-6, atol=1e-7)
    transformer = per_call_us(lambda: pre.transform(frame))
    with_frame = per_call_us(lambda: pre.transform(frame_from_rows(rows, features, dtypes)))
    fast = per_call_us(lambda: compiled.transform(rows))
    return {
        "rows": len(rows),
        "column_transformer_us": round(transformer, 1),
        "frame_and_transformer_us": round(with_frame, 1),
        "compiled_us": round(fast, 2),
        "speedup": round(transformer / fast, 1),
        "speedup_vs_frame_and_transformer": round(with_frame / fast, 1),
    }


def measure(home: Path, names: list[str], row_counts: tuple[int, ...] = (1, 32)) -> dict[str, Any]:
    registry = ModelRegistry(home / "models")
    out: dict[str, Any] = {}
    for name in names:
        predictor = load_predictor(registry, "default", name)
        rng = np.random.default_rng(0)
        for n in row_counts:
            rows = rng.standard_normal((n, len(predictor.features))).tolist()
            out[f"{name}/{n}"] = compare(predictor, rows)
    return out


def line(results: dict[str, Any]) -> str:
    return "P preprocessing, CPU µs per call (ColumnTransformer → compiled): " + ", ".join(
        f"{key} {r['column_transformer_us']:.0f} → {r['compiled_us']:.1f} ({r['speedup']:.0f}x; "
        f"{r['speedup_vs_frame_and_transformer']:.0f}x with the frame)"
        for key, r in results.items()
    )


if __name__ == "__main__":
    home = Path(sys.argv[1] if len(sys.argv) > 1 else ".mlqueue")
    registry = ModelRegistry(home / "models")
    print(line(measure(home, [m["name"] for m in registry.list_models("default")])))
