"""Prometheus families of the live per-version figures (store/live_metrics.py), labelled tenant, model, version.

Read at scrape time from each version's total hash, for the versions that served within the last hour: counters
never go down, and the series of a version that stopped serving drop out after an hour.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from store import keys, live_metrics

LABELS = ["tenant", "model", "version"]


def live_families(client: redis.Redis) -> Iterator[Metric]:
    versions = live_metrics.indexed_versions(client)
    totals = []
    with client.pipeline(transaction=False) as pipe:
        for tenant, model, version in versions:
            pipe.hgetall(keys.live_total(tenant, model, version))
        totals = pipe.execute()
    requests = CounterMetricFamily("mlq_model_requests", "Predict requests a version answered", labels=LABELS)
    errors = CounterMetricFamily("mlq_model_errors", "Predict requests a version failed", labels=LABELS)
    shadow = CounterMetricFamily("mlq_model_shadow_requests", "Requests copied to a version as a shadow", labels=LABELS)
    agreement = GaugeMetricFamily(
        "mlq_model_shadow_agreement", "Share of shadow rows that agreed with the primary's answer", labels=LABELS
    )
    latency = HistogramMetricFamily(
        "mlq_model_latency_ms", "Predict request latency per version, enqueue to answer (ms)", labels=LABELS
    )
    for (tenant, model, version), raw in zip(versions, totals, strict=True):
        fields = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        labels = [tenant, model, str(version)]
        requests.add_metric(labels, fields.get("req", 0.0))
        errors.add_metric(labels, fields.get("err", 0.0))
        shadow.add_metric(labels, fields.get("sreq", 0.0))
        if fields.get("sh_n"):
            agreement.add_metric(labels, fields.get("sh_agree", 0.0) / fields["sh_n"])
        running, buckets = 0.0, []
        for bound in live_metrics.LATENCY_BOUNDS_MS:
            running += fields.get(f"lat:{bound}", 0.0)
            buckets.append((str(bound), running))
        buckets.append(("+Inf", running + fields.get("lat:inf", 0.0)))
        latency.add_metric(labels, buckets, sum_value=fields.get("lat_sum", 0.0))
    yield from (requests, errors, shadow, agreement, latency)
