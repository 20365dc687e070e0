"""Parent beside child, measured by the optimize job on one machine: artifact bytes, latency, test metrics.

Latency is the median of repeated calls in one thread (`torch.set_num_threads(1)` for the duration), after a few
warm-up calls, on the same rows for both sides: 1 row and 64 rows. Two numbers per batch size:
`latency_ms` is raw rows → scores, what a worker spends per batch (preprocessing included);
`model_latency_ms` is the model alone on preprocessed features, where the optimisation acts (null for an ONNX
export that carries its preprocessing inside). Metrics are recomputed for both sides on the parent's test split.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from training.metrics import classification_metrics, regression_metrics
from training.params import CLASSIFICATION

BATCH_SIZES = (1, 64)
REPEATS = 30
WARMUP = 3

Scorer = Callable[[Any], np.ndarray]


@dataclass
class Side:
    """One version as the comparison sees it."""

    version: int | None
    artifact_bytes: int
    predict: Scorer  # raw-row frame → scores (probabilities (n, K) or values (n,))
    forward: Scorer | None  # preprocessed float32 features → scores


def medians_ms(calls: list[Callable[[], Any]], repeats: int = REPEATS) -> list[float]:
    """The median time of each call, the calls interleaved (a, b, a, b, ...) so that a machine that speeds up or
    slows down during the measurement (other processes, frequency scaling) biases neither side."""
    for _ in range(WARMUP):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[i].append(time.perf_counter() - start)
    return [round(statistics.median(t) * 1000, 4) for t in times]


def _metrics(task: str, y: np.ndarray, scores: np.ndarray, n_classes: int) -> dict[str, Any]:
    if task == CLASSIFICATION:
        proba = np.asarray(scores, dtype=np.float64)
        return classification_metrics(y, proba.argmax(axis=1), proba, n_classes)
    return regression_metrics(y, np.asarray(scores, dtype=np.float64).reshape(-1))


def _rows(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    # Repeat the test rows when the split is smaller than the batch: the batch size is what is measured.
    reps = -(-n // max(len(frame), 1))
    return pd.concat([frame] * reps, ignore_index=True).iloc[:n]


def _latencies(sides: list[Side], X_test: pd.DataFrame, x_test: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: list[dict[str, Any]] = [{"latency_ms": {}, "model_latency_ms": {}} for _ in sides]
    try:
        for n in BATCH_SIZES:
            frame, features = _rows(X_test, n), x_test[np.arange(n) % len(x_test)]
            whole = medians_ms([partial(s.predict, frame) for s in sides], repeats)
            models = medians_ms([partial(s.forward, features) for s in sides if s.forward is not None], repeats)
            for i, side in enumerate(sides):
                out[i]["latency_ms"][str(n)] = whole[i]
                out[i]["model_latency_ms"][str(n)] = models.pop(0) if side.forward is not None else None
    finally:
        torch.set_num_threads(threads)
    return out


def compare(
    parent: Side,
    child: Side,
    task: str,
    X_test: pd.DataFrame,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    """{"parent": ..., "child": ..., "ratios": ..., "metric_deltas": ...}, both sides measured the same way."""
    sides = []
    for side, timing in zip((parent, child), _latencies([parent, child], X_test, x_test, repeats), strict=True):
        sides.append(
            {
                "version": side.version,
                "artifact_bytes": side.artifact_bytes,
                **timing,
                "metrics": _metrics(task, y_test, side.predict(X_test), n_classes),
            }
        )
    p, c = sides
    ratios: dict[str, Any] = {"size": round(p["artifact_bytes"] / max(c["artifact_bytes"], 1), 3)}
    for key in ("latency_ms", "model_latency_ms"):
        for n in p[key]:
            if p[key][n] and c[key][n]:
                ratios[f"speedup_{key.removesuffix('_ms')}_{n}"] = round(p[key][n] / c[key][n], 3)
    deltas = {
        k: round(c["metrics"][k] - v, 4)
        for k, v in p["metrics"].items()
        if isinstance(v, int | float) and isinstance(c["metrics"].get(k), int | float)
    }
    return {
        "parent": p,
        "child": c,
        "ratios": ratios,
        "metric_deltas": deltas,
        "test_rows": len(y_test),
        "repeats": repeats,
        "threads": 1,
    }
