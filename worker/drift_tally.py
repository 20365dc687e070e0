"""Drift counting in the workers: bin what a batch scored, add the counts to Redis with the batch's own writes.

The inference consumer calls `observe` after each forward pass and `flush_in` on the pipeline that answers the
batch, so drift costs no round trip of its own: numpy bins the rows (training/drift_reference.py's DriftBinner,
compiled once per loaded version) and one HINCRBY per non-empty bin rides along (store/drift_counts.py). The
batch worker observes each chunk and `flush`es it in one pipeline.

Drift is an observation, never a reason to fail a prediction: a version without a reference (trained before
references existed, or an uploaded model) is skipped, and an error while binning is logged once per version and
the batch is answered as usual.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import redis
from redis.client import Pipeline

from store.drift_counts import DriftCounts
from store.settings import Settings
from training.drift_reference import DriftBinner

log = logging.getLogger(__name__)

MAX_BINNERS = 256  # compiled references kept per process; more versions than this in one worker is unusual
VersionKey = tuple[str, str, int]


class DriftTally:
    """Counts held for the batch in hand, per (tenant, model, version)."""

    def __init__(self, client: redis.Redis | None, *, enabled: bool = True) -> None:
        self.counts = DriftCounts(client) if client is not None else None
        self.enabled = enabled and client is not None
        self.binners: dict[VersionKey, DriftBinner | None] = {}
        self.pending: dict[VersionKey, dict[str, int]] = {}
        self.warned: set[VersionKey | None] = set()

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> DriftTally:
        return cls(client, enabled=settings.drift_counting)

    @classmethod
    def off(cls) -> DriftTally:
        return cls(None, enabled=False)

    def _binner(self, key: VersionKey, predictor: Any) -> DriftBinner | None:
        if key not in self.binners:
            if len(self.binners) >= MAX_BINNERS:
                self.binners.clear()
            manifest = getattr(predictor, "manifest", None) or {}
            stored = manifest.get("drift_reference")
            binner = None
            if isinstance(stored, dict):
                try:
                    binner = DriftBinner(stored, list(getattr(predictor, "features", [])))
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("drift: version %s of %s has an unusable reference: %s", key[2], key[1], exc)
            self.binners[key] = binner
        return self.binners[key]

    def observe(self, predictor: Any, rows: list[Any], scores: np.ndarray) -> None:
        """Bin `rows` (as the predictor accepted them) and their `scores` into the version's pending counts."""
        if not self.enabled or not rows:
            return
        key: VersionKey | None = None
        try:
            key = (str(predictor.tenant), str(predictor.name), int(predictor.version))
            binner = self._binner(key, predictor)
            if binner is None:
                return
            fields = binner.count(rows, scores)
        except Exception as exc:  # noqa: BLE001 - counting must never fail a batch
            if key not in self.warned:  # once per version: a systematic failure must not flood the log
                self.warned.add(key)
                log.warning("drift: a batch of %s was not counted: %s", key, exc)
            return
        into = self.pending.setdefault(key, {})
        for field, n in fields.items():
            into[field] = into.get(field, 0) + n

    def flush_in(self, pipe: Pipeline) -> None:
        """Queue the pending counts on `pipe` (a pipeline the caller sends anyway) and forget them."""
        if not self.pending:
            return
        for (tenant, model, version), fields in self.pending.items():
            DriftCounts.add_in(pipe, tenant, model, version, fields)
        self.pending = {}

    def flush(self) -> None:
        """Send the pending counts in one pipeline of their own (the batch worker, once per chunk)."""
        if not self.pending or self.counts is None:
            return
        try:
            with self.counts.redis.pipeline(transaction=False) as pipe:
                self.flush_in(pipe)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("drift: counts of this chunk not recorded: %s", exc)
            self.pending = {}
