"""What the inference consumer adds for safe model updates: live per-version figures, shadow runs, warm-ups.

- Figures: each answered request adds to its version's live counters (store/live_metrics.py) in the pipeline
  that answers the batch; latency runs from the stream entry's id (the ms it was enqueued) to the answer.
- Shadows: a request the API copied to a shadow version (`PredictRequest.shadow`) is run again on that version
  AFTER its batch was answered, so a shadow never delays or changes an answer; only the comparison is kept.
- Warm-ups: every couple of seconds the consumer loads the versions the API asked for (store/readiness.py) and
  says so in the version's readiness hash; its liveness record then lists the version as held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import redis

from store import keys, readiness
from store.live_metrics import LiveBatch
from training.predictor import Predictor
from worker.model_cache import ModelCache


class Item(Protocol):
    """What is read here of worker/inference.py's Item (not imported: that module imports this one)."""

    entry_id: str
    request: Any
    run: bool
    error: dict[str, Any] | None
    outputs: list[Any] | None


log = logging.getLogger(__name__)


def outputs_of(predictor: Predictor, scores: np.ndarray) -> list[Any]:
    """One comparable output per row: the label (classification) or the value (regression)."""
    if predictor.classes:
        return [predictor.classes[int(i)] for i in np.argmax(scores, axis=1)]
    return [float(v) for v in np.asarray(scores, dtype=np.float64).reshape(-1)]


def _latency_ms(entry_id: str, now_ms: float) -> float:
    try:
        return max(0.0, now_ms - int(entry_id.split("-", 1)[0]))
    except ValueError:
        return 0.0


def figures_of(items: Sequence[Item], regression: dict[tuple[str, str, int], bool]) -> LiveBatch:
    """The live figures of one answered batch (requests that ran; already-final ones are not counted)."""
    batch, now_ms = LiveBatch(), time.time() * 1000
    for it in items:
        request = it.request
        if request is None or not it.run and it.error is None or not isinstance(request.version, int):
            continue
        key = (request.tenant, request.model, request.version)
        figures = batch[key]
        figures.request(_latency_ms(it.entry_id, now_ms), it.error is not None)
        if it.outputs is not None:
            if regression.get(key):
                figures.predictions(values=it.outputs)
            else:
                figures.predictions(labels=it.outputs)
    return batch


def run_shadows(client: redis.Redis, cache: ModelCache, items: Sequence[Item]) -> None:
    """Run the shadow copies of an answered batch, one forward pass per shadow version, and write the figures."""
    groups: dict[tuple[str, str, int], list[Item]] = {}
    for it in items:
        if it.request is not None and it.request.shadow and it.outputs is not None:
            groups.setdefault((it.request.tenant, it.request.model, int(it.request.shadow)), []).append(it)
    if not groups:
        return
    batch = LiveBatch()
    for (tenant, model, version), group in groups.items():
        figures = batch[(tenant, model, version)]
        try:
            predictor = cache.get(tenant, model, version)
            rows = [row for it in group for row in it.request.inputs]
            outputs = outputs_of(predictor, predictor.scores(rows))
        except Exception as exc:  # a broken shadow is counted, never raised: the answers already went out
            log.warning("shadow %s/%s v%d failed: %s", tenant, model, version, exc)
            for _ in group:
                figures.request(0.0, True, shadow=True)
            continue
        regression = not predictor.classes
        start = 0
        for it in group:
            n = len(it.request.inputs)
            mine = outputs[start : start + n]
            start += n
            figures.request(0.0, False, shadow=True)
            figures.agreement(it.outputs or [], mine, regression)
            figures.predictions(values=mine) if regression else figures.predictions(labels=mine)
    with client.pipeline(transaction=False) as pipe:
        batch.write_in(pipe)
        pipe.execute()


def warm_up(client: redis.Redis, cache: ModelCache, consumer: str) -> None:
    """Load what the API asked the workers to hold and not yet held here; record success or the error."""
    wanted = readiness.warm_requests(client)
    if not wanted:
        return
    held = set(cache.loaded())
    for tenant, model, version in wanted:
        if (tenant, model, version) in held:
            continue
        mark = client.hget(keys.ready(tenant, model, version), consumer)
        if mark and str(mark).startswith(readiness.ERROR_PREFIX):
            continue  # failed here already; a new warm request (the next alias change) clears it and retries
        error = None
        try:
            cache.get(tenant, model, version)
        except Exception as exc:
            error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("could not warm %s/%s v%d: %s", tenant, model, version, error)
        with client.pipeline(transaction=False) as pipe:
            readiness.mark_in(pipe, tenant, model, version, consumer, error)
            pipe.execute()
