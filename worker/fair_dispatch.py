"""What a train or batch worker does with a message it took: run the job that is fairly next (store/fair.py).

Every task on the `train` and `batch` queues (mlqueue.train, .optimize, .search, .batch_predict) comes through
`FairDispatcher.run`: it asks FAIR_PICK for the job to run, which may be another tenant's job than the message's
own, and runs it with the runner of that job's type. The message's own job stays in its fair queue; one of the
messages still on the queue will run it. A message whose job is in no fair queue (EMPTY) runs its own job, as
before: the job's lease decides whether it starts at all (a duplicate or late message starts nothing).

When only tenants at MLQ_MAX_RUNNING_PER_TENANT have work (WAIT), the worker has nothing else to do: it asks again
every `poll_s` for up to `max_wait_s`, then gives the message back to the queue (Reject with requeue), so a
message is never held past the task's time limit and a warm shutdown is never delayed by a wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery.exceptions import Reject

from store import keys
from store.fair import FairQueues
from store.jobs import JobStore
from store.leases import parse_drain
from store.script_outcomes import FairPickOutcome
from worker.train_hooks import retry_redis

log = logging.getLogger(__name__)

Runner = Callable[[dict[str, Any], str], None]  # (the job's request payload, the worker's hostname)


class FairDispatcher:
    """Runs the fairly next job of a queue for each message a worker process takes."""

    def __init__(
        self,
        fair: Callable[[], FairQueues],
        jobs: Callable[[], JobStore],
        runners: dict[str, Runner],
        poll_s: float = 0.5,
        max_wait_s: float = 30.0,
    ) -> None:
        self.fair = fair
        self.jobs = jobs
        self.runners = runners
        self.poll_s = poll_s
        self.max_wait_s = max_wait_s

    def run(self, queue: str, job_type: str, payload: dict[str, Any], hostname: str) -> None:
        """Run one job for a message of `queue` whose own job is (`job_type`, `payload`)."""
        waited_until = time.monotonic() + self.max_wait_s
        while True:
            pick = retry_redis(lambda: self.fair().pick(queue), f"fair pick on {queue}", 30.0)
            if pick.outcome is FairPickOutcome.EMPTY:
                self.runners[job_type](payload, hostname)
                return
            if pick.outcome is FairPickOutcome.PICKED and pick.job_id is not None:
                picked = self._payload(pick.job_id)
                if picked is None:
                    continue  # it expired meanwhile, or is of a type this worker does not run: the next one
                picked_type, picked_payload = picked
                if pick.job_id != payload.get("job_id"):
                    log.info(
                        "%s: runs %s job %s (fairly next) for message %s",
                        hostname,
                        picked_type,
                        pick.job_id,
                        payload.get("job_id"),
                    )
                self.runners[picked_type](picked_payload, hostname)
                return
            if time.monotonic() >= waited_until or self._draining(hostname):
                # Only capped tenants have work. Give the message back rather than hold it for hours (or hold up a
                # warm shutdown).
                raise Reject("only tenants at MLQ_MAX_RUNNING_PER_TENANT have queued jobs", requeue=True)
            time.sleep(self.poll_s)

    def _draining(self, hostname: str) -> bool:
        try:
            return parse_drain(self.jobs().redis.get(keys.drain(hostname))) is not None
        except redis.RedisError:
            return False

    def _payload(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        job = retry_redis(lambda: self.jobs().get(job_id), f"job {job_id}: read", 30.0)
        if job is None:
            return None
        if job["type"] not in self.runners:
            log.error("job %s of type %s was queued fairly on a queue that does not run it", job_id, job["type"])
            return None
        return job["type"], {**(job.get("request") or {}), "job_id": job["id"], "tenant": job["tenant"]}
