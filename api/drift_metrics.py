"""Drift gauges on /metrics: PSI per feature and for the predictions of every version counted in the last hour.

Read at scrape time like the job counters (api/metrics.py): the versions come from the workers' active list
(store/drift_counts.py, bounded), each version's reference from its manifest (immutable, so kept per process),
its counts from a few hashes. A scrape with many active versions reads at most SCRAPE_VERSIONS of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily, Metric

from store.drift_counts import DriftCounts
from training.drift_psi import LEVELS, report
from training.errors import MLQError
from training.registry import ModelRegistry

log = logging.getLogger(__name__)

WINDOW_S = 3600
SCRAPE_VERSIONS = 50
MAX_REFERENCES = 512  # references kept per API process


class DriftCollector:
    """A custom prometheus collector: the drift of the versions counted lately, over the last hour."""

    def __init__(self, client: Callable[[], redis.Redis], registry: Callable[[], ModelRegistry]) -> None:
        self.client = client
        self.registry = registry
        self.references: dict[tuple[str, str, int], dict[str, Any] | None] = {}

    def _reference(self, tenant: str, model: str, version: int) -> dict[str, Any] | None:
        key = (tenant, model, version)
        if key not in self.references:
            if len(self.references) >= MAX_REFERENCES:
                self.references.clear()
            try:
                stored = self.registry().manifest(tenant, model, version).get("drift_reference")
            except MLQError:  # deleted since it was counted, or unreadable: nothing to report
                return None
            self.references[key] = stored if isinstance(stored, dict) else None
        return self.references[key]

    def collect(self) -> Iterator[Metric]:
        labels = ["tenant", "model", "version"]
        psi = GaugeMetricFamily(
            "mlq_drift_psi",
            "Population stability index of a feature, live (1 h) against training",
            labels=[*labels, "feature"],
        )
        pred = GaugeMetricFamily(
            "mlq_drift_prediction_psi", "PSI of the predictions, live (1 h) against the test split", labels=labels
        )
        level = GaugeMetricFamily(
            "mlq_drift_level", "Worst drift level of a version: 0 none, 1 moderate, 2 major", labels=labels
        )
        rows = GaugeMetricFamily("mlq_drift_rows", "Live rows counted for drift in the last hour", labels=labels)
        try:
            counts = DriftCounts(self.client())
            for tenant, model, version in counts.active(WINDOW_S)[:SCRAPE_VERSIONS]:
                reference = self._reference(tenant, model, version)
                if reference is None:
                    continue
                body = report(reference, counts.read(tenant, model, version, WINDOW_S))
                values = [tenant, model, str(version)]
                for feature in body["features"]:
                    if feature["psi"] is not None:
                        psi.add_metric([*values, feature["name"]], feature["psi"])
                if body["predictions"]["psi"] is not None:
                    pred.add_metric(values, body["predictions"]["psi"])
                if body["level"] is not None:
                    level.add_metric(values, LEVELS.index(body["level"]))
                rows.add_metric(values, body["rows"])
        except (redis.RedisError, KeyError, TypeError, ValueError) as exc:
            log.warning("drift gauges not collected: %s", exc)  # mlq_redis_up says when Redis is the cause
        yield from (psi, pred, level, rows)
