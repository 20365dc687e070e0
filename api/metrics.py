"""Prometheus metrics: what all processes share is read from Redis at scrape time; what each API process counts
is added up across gunicorn's processes by prometheus_client's multiprocess mode.

Job counters and the duration histogram are kept by store.jobs (Lua scripts, one hash each); the inference batch
sizes by the inference workers (store/inference_queue.py); queue depth is the length of Celery's Redis lists and of
the inference stream; worker counts come from the liveness keys. The HTTP request counter and the gauges of waits
and streams in progress are per process: under gunicorn (api/gunicorn_conf.py sets PROMETHEUS_MULTIPROC_DIR) each
process writes them to its own file and every scrape, whichever process answers it, sums them all, so counters
never jump between scrapes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from api.live_prom import live_families
from store import residency
from store.contract import WORKER_QUEUES
from store.fair import QUEUE_TYPES, FairQueues, tenant_label
from store.inference_queue import batch_size_histogram, queue_depths, stats
from store.jobs import DURATION_BUCKETS, JobStore
from store.liveness import WorkerLiveness


class JobsCollector:
    """A custom collector: each scrape reads the shared counters from Redis."""

    def __init__(self, jobs: JobStore, secret_key: str = "") -> None:
        self.jobs = jobs
        self.secret_key = secret_key  # the key of the tenants' pseudonyms (store.fair.tenant_label)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mlq_redis_up", "1 when Redis answered this scrape")
        try:
            counts, durations = self.jobs.metrics()
            depths = queue_depths(self.jobs.redis)
            workers = WorkerLiveness(self.jobs.redis).counts()
            batching = stats(self.jobs.redis)
            cache_counts, caches = residency.counters(self.jobs.redis), residency.resident(self.jobs.redis)
            fair = FairQueues(self.jobs.redis)
            loads = {queue: fair.loads(queue) for queue in QUEUE_TYPES}
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        total = CounterMetricFamily("mlq_jobs", "Jobs that reached each status", labels=["type", "status"])
        for (jtype, status), n in sorted(counts.items()):
            total.add_metric([jtype, status], n)
        yield total
        hist = HistogramMetricFamily(
            "mlq_job_duration_seconds", "Run time of jobs, first start to end", labels=["type"]
        )
        for jtype, fields in sorted(durations.items()):
            count = fields.get("count", 0.0)
            buckets = [(repr(b), fields.get(f"le:{b!r}", 0.0)) for b in DURATION_BUCKETS] + [("+Inf", count)]
            hist.add_metric([jtype], buckets, sum_value=fields.get("sum", 0.0))
        yield hist
        depth = GaugeMetricFamily("mlq_queue_depth", "Messages waiting in each queue", labels=["queue"])
        alive = GaugeMetricFamily("mlq_workers", "Live worker processes consuming each queue", labels=["queue"])
        for queue in WORKER_QUEUES:
            depth.add_metric([queue], depths[queue])
            alive.add_metric([queue], workers.get(queue, 0))
        yield depth
        yield alive
        tenants = GaugeMetricFamily(
            "mlq_tenant_jobs",
            "A tenant's jobs queued and running on a fairly scheduled queue (tenant: a pseudonym)",
            labels=["queue", "tenant", "state"],
        )
        for queue, per_tenant in loads.items():
            for name, load in per_tenant.items():
                tenants.add_metric([queue, tenant_label(name, self.secret_key), "queued"], load.queued)
                tenants.add_metric([queue, tenant_label(name, self.secret_key), "running"], load.running)
        yield tenants
        sizes = HistogramMetricFamily("mlq_inference_batch_size", "Predict requests answered by one batch")
        size_buckets, size_sum, _ = batch_size_histogram(batching)
        sizes.add_metric([], size_buckets, sum_value=size_sum)
        yield sizes
        yield from live_families(self.jobs.redis)  # per model version (api/live_prom.py)
        yield from residency_metrics(cache_counts, caches)


def residency_metrics(counts: dict[str, float], caches: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """The inference workers' model caches (store/residency.py): requests served from memory or after a load,
    loads, evictions, cold-load seconds, and per worker process the bytes held against its budget."""
    for name, help_ in (
        ("hits", "Predict requests whose model version was already in a worker's memory"),
        ("misses", "Predict requests whose model version had to be loaded first"),
        ("loads", "Model versions loaded into a worker's cache"),
        ("load_failures", "Model version loads that failed (missing, tampered, too large for the budget)"),
        ("evictions", "Model versions dropped from a worker's cache to stay within its memory budget"),
        ("handoffs", "Predict requests handed by a worker without their version to one that held it"),
    ):
        counter = CounterMetricFamily(f"mlq_model_cache_{name}", help_)
        counter.add_metric([], counts.get(name, 0.0))
        yield counter
    asked = counts.get("hits", 0.0) + counts.get("misses", 0.0)
    rate = GaugeMetricFamily("mlq_model_cache_hit_ratio", "Share of predict requests served without a load")
    rate.add_metric([], counts.get("hits", 0.0) / asked if asked else 0.0)
    yield rate
    load = HistogramMetricFamily("mlq_model_load_seconds", "Cold-load time of a model version, miss to ready")
    load_buckets, load_sum = residency.load_seconds_histogram(counts)
    load.add_metric([], load_buckets, sum_value=load_sum)
    yield load
    held = GaugeMetricFamily(
        "mlq_model_cache_bytes", "Bytes of loaded model versions per worker process", labels=["worker", "device"]
    )
    budget = GaugeMetricFamily(
        "mlq_model_cache_budget_bytes", "MLQ_MODEL_MEMORY_MB per worker process (0: none)", labels=["worker", "device"]
    )
    versions = GaugeMetricFamily(
        "mlq_model_cache_versions", "Model versions in memory per worker process", labels=["worker", "device"]
    )
    for worker, record in sorted(caches.items()):
        labels = [worker, str(record.get("device", ""))]
        held.add_metric(labels, float(record.get("bytes", 0)))
        budget.add_metric(labels, float(record.get("budget", 0)))
        versions.add_metric(labels, float(len(record.get("models", []))))
    yield held
    yield budget
    yield versions


def make_metrics(jobs: JobStore, secret_key: str = "") -> tuple[CollectorRegistry, Counter, dict[str, Gauge]]:
    """What a scrape reads (a prometheus CollectorRegistry), the HTTP request counter and the in-progress gauges.

    Without PROMETHEUS_MULTIPROC_DIR (tests, `flask run`) the metrics live in a registry of the app's own, so
    several apps in one process never clash. With it, they are written to the directory and a scrape reads all of
    it; "livesum" gauges count only the processes alive.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(jobs, secret_key))
    shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    if shared:
        multiprocess.MultiProcessCollector(registry)
    own = None if shared else registry
    requests = Counter(
        "mlq_http_requests", "HTTP requests served by the API", ["method", "route", "status"], registry=own
    )
    gauges = {
        kind: Gauge(
            f"mlq_{kind}s_in_progress", f"{help_} in progress on the API", registry=own, multiprocess_mode="livesum"
        )
        for kind, help_ in (("wait", "Requests waiting for a job to end"), ("stream", "Event streams open"))
    }
    return registry, requests, gauges
