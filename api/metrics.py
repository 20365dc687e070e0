"""Prometheus metrics read from Redis at scrape time, so every API and worker process's jobs are counted.

Job counters and the duration histogram are kept by worker.jobs (Lua scripts, one hash each); queue depth is
the length of Celery's Redis lists; worker counts come from the liveness keys. Nothing here is per process
except the HTTP request counter.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from worker.contract import QUEUES
from worker.inference_queue import queue_depths
from worker.jobs import DURATION_BUCKETS, JobStore
from worker.liveness import WorkerLiveness


class JobsCollector:
    """A custom collector: each scrape reads the shared counters from Redis."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mlq_redis_up", "1 when Redis answered this scrape")
        try:
            counts, durations = self.jobs.metrics()
            depths = queue_depths(self.jobs.redis)
            workers = WorkerLiveness(self.jobs.redis).counts()
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
        hist = HistogramMetricFamily("mlq_job_duration_seconds", "Run time of jobs, first start to end",
                                     labels=["type"])
        for jtype, fields in sorted(durations.items()):
            count = fields.get("count", 0.0)
            buckets = [(repr(b), fields.get(f"le:{b!r}", 0.0)) for b in DURATION_BUCKETS] + [("+Inf", count)]
            hist.add_metric([jtype], buckets, sum_value=fields.get("sum", 0.0))
        yield hist
        depth = GaugeMetricFamily("mlq_queue_depth", "Messages waiting in each queue", labels=["queue"])
        alive = GaugeMetricFamily("mlq_workers", "Live worker processes consuming each queue", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], depths[queue])
            alive.add_metric([queue], workers.get(queue, 0))
        yield depth
        yield alive


def make_registry(jobs: JobStore) -> tuple[CollectorRegistry, Counter]:
    """A registry per app (not the global one, so several apps in one process never clash)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(jobs))
    requests = Counter("mlq_http_requests", "HTTP requests served by this process",
                       ["method", "route", "status"], registry=registry)
    return registry, requests
