"""The batching inference consumer: a thread in each inference worker process that serves the request stream.

One loop: XREADGROUP takes up to `batch_max_size` rows of requests that are waiting (waiting at most
`batch_max_delay_ms` for more once the first arrived); ONE pipelined round trip marks their jobs running; the
rows of all requests for the same model version go through ONE preprocessing call and ONE forward pass; the
output is split back per request with each request's own post-processing; ONE pipelined round trip finishes
every job (the first final status wins), pushes each answer to the submitter's reply list, and XACKs + XDELs
the entries. A request whose rows cannot be processed fails alone: its batch is then answered request by request.

Delivery is at least once. An entry that was read but not acked stays in the group's pending list; every
CLAIM_EVERY_S a consumer looks for entries idle longer than `claim_idle_s` (their worker died), fails those
already delivered `max_attempts` times (the request likely kills workers) and serves the others (XCLAIM).
Warm shutdown: `stop()` lets the loop finish and answer the batch it holds, then it reads no more.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import redis
from celery import Celery, signals
from redis.client import NEVER_DECODE, Pipeline

from store import keys
from store.contract import INFERENCE_QUEUE, PredictRequest
from store.inference_queue import FIELD, GROUP, STATS, STREAM, STREAMS, batch_size_field
from store.inference_queue import decode as decode_request
from store.jobs import JobStore, now_rfc3339
from store.live_metrics import LiveBatch
from store.serving import Policy
from store.settings import Settings
from training.errors import DeadlineExceeded, TooManyAttempts
from training.postprocess import check_postprocess
from training.predictor import Predictor
from worker.batch_policy import BatchPolicies, chunks, full, hold_until, pick, rows_of
from worker.drift_tally import DriftTally
from worker.model_cache import ModelCache
from worker.stream_item import Item as Item  # re-exported: the consumer's unit of work
from worker.traffic_serving import figures_of, outputs_of, run_shadows, warm_up
from worker.warm_routing import WarmRouter

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # an idle consumer wakes once a second (to notice a shutdown): no busy polling
CLAIM_EVERY_S = 2.0
CLAIM_IDLE_S = 30.0  # longer than any batch takes; a live worker's entries are never taken from it
ErrorFor = Callable[[str, BaseException], dict[str, Any]]


class InferenceConsumer:
    """Reads the request stream in batches and answers them; `start()` runs it on a thread."""

    def __init__(
        self,
        client: redis.Redis,
        jobs: JobStore,
        cache: ModelCache,
        name: str,
        *,
        max_size: int,
        max_delay_ms: float,
        max_attempts: int,
        error_for: ErrorFor,
        claim_idle_s: float = CLAIM_IDLE_S,
        drift: DriftTally | None = None,
        max_passover_ms: float = 100.0,
        router: WarmRouter | None = None,
    ) -> None:
        self.redis = client
        self.jobs = jobs
        self.cache = cache
        self.name = name  # the consumer name in the group: unique per process
        self.max_size = max(1, max_size)
        self.max_delay_s = max(0.0, max_delay_ms) / 1000
        self.max_attempts = max_attempts
        self.error_for = error_for
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.drift = drift or DriftTally.off()  # live inputs and predictions into the reference bins
        self.policies = BatchPolicies(client, Policy(self.max_size, max(0.0, max_delay_ms)))
        self.max_passover_s = max(0.0, max_passover_ms) / 1000
        self._carry: list[Item] = []  # normal-lane requests read but left for the next batch (priority lanes)
        self.router = router  # worker/warm_routing.py: requests for versions held elsewhere go there
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="mlq-inference", daemon=True)

    def start(self) -> InferenceConsumer:
        self.ensure_group()
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop reading; the batch in hand is answered first. Then leave the group if nothing is pending."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        try:
            pending = [
                p for s in STREAMS for p in self.redis.xpending_range(s, GROUP, "-", "+", 1, consumername=self.name)
            ]
            if not pending:
                for stream in STREAMS:
                    self.redis.xgroup_delconsumer(stream, GROUP, self.name)
            if self.router is not None:
                self.router.stop()
        except redis.RedisError as exc:
            log.warning("inference consumer %s: could not leave the group: %s", self.name, exc)

    def ensure_group(self) -> None:
        for stream in STREAMS:
            try:
                # From id 0: requests queued before any worker ever started are served too.
                self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        if self.router is not None:
            self.router.ensure()

    def run(self) -> None:
        next_claim = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + CLAIM_EVERY_S
                    self.claim_stale()
                    warm_up(self.redis, self.cache, self.name)
                items = self.read()
                if items:
                    self.serve(items)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream or group was deleted (e.g. a flushed db): recreate
                    self._retry(self.ensure_group)
                else:
                    log.exception("inference consumer %s: Redis refused a command", self.name)
                    self._stop.wait(1.0)
            except redis.RedisError as exc:
                # Redis went away: what was read stays pending and is served after the claim idle time.
                log.warning("inference consumer %s: %s; retrying in 1 s", self.name, exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("inference consumer %s: unexpected error; continuing", self.name)
                self._stop.wait(0.1)
        if self._carry:  # read, so answered before this consumer goes
            carried, self._carry = self._carry, []
            self._retry(lambda: self.serve(carried))

    def _retry(self, step: Callable[[], None]) -> None:
        try:
            step()
        except redis.RedisError as exc:
            log.warning("inference consumer %s: %s", self.name, exc)
            self._stop.wait(1.0)

    # ---- reading -------------------------------------------------------------------------------------------
    def _raw(self, *command: Any) -> Any:
        # Stream replies come back as bytes and each entry is decoded on its own: through the decoding client,
        # one entry that is not UTF-8 made the whole reply fail, so every read or claim that held it failed.
        return self.redis.execute_command(*command, **{NEVER_DECODE: []})

    def _xread(self, count: int, block_ms: int | None, streams: tuple[str, ...] = STREAMS) -> list[Item]:
        block = ("BLOCK", block_ms) if block_ms is not None else ()
        # Requests another consumer handed to this one come through its doorbell (worker/warm_routing.py); they
        # are normal-lane entries, read with the normal lane.
        doorbell = self.router.doorbell if self.router is not None and STREAM in streams else None
        names = (*streams, doorbell) if doorbell else streams
        reply = self._raw(
            "XREADGROUP", "GROUP", GROUP, self.name, "COUNT", count, *block, "STREAMS", *names, *(">",) * len(names)
        )
        now = time.monotonic()
        items = []
        for stream, entries in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            if self.router is not None and name == doorbell:  # requests handed to us
                entries, name = self.router.picked_up(entries), STREAM
            for entry_id, fields in entries:
                item = self.decode(entry_id, fields)
                item.stream, item.read_at = name, now
                items.append(item)
        return items

    def read(self) -> list[Item]:
        """What is waiting, up to the largest batch size in rows; after the first arrival, wait at most the
        shortest queue delay of the models in hand for more. High-priority requests go first (batch_policy.pick)."""
        cap = self.policies.largest()
        carried = self._carry
        self._carry = []
        carried_rows = sum(rows_of(it.request) for it in carried)
        # With a full batch carried, only the high lane is read; with anything carried, nothing blocks.
        streams = STREAMS if carried_rows < cap else STREAMS[:1]
        items = carried + self._xread(cap, None if carried else BLOCK_MS, streams)
        if not items:
            return []
        deadline = hold_until(items, self.policies)
        while not full(items, cap, self.policies):
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms < 1:
                break
            more = self._xread(cap - sum(rows_of(it.request) for it in items), left_ms)
            if not more:
                break
            items += more
            deadline = min(deadline, hold_until(more, self.policies))
        batch, self._carry = pick(items, cap, STREAM, self.max_passover_s)
        return batch

    def decode(self, entry_id: str | bytes, fields: dict[Any, Any] | None) -> Item:
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id  # stream ids are ASCII
        try:
            fields = fields or {}
            request = PredictRequest.decode(
                decode_request(fields[FIELD.encode()] if FIELD.encode() in fields else fields[FIELD])
            )
        except (KeyError, TypeError, ValueError) as exc:
            # Not a request this code wrote: acknowledge it, there is no job to answer.
            log.error("inference: dropping undecodable stream entry %s: %s", entry_id, exc)
            return Item(entry_id, None, None, run=False)
        return Item(entry_id, request.job_id, request)

    def claim_stale(self) -> None:
        """Take over entries whose consumer died; fail those delivered max_attempts times already."""
        for stream in STREAMS:
            self._claim_stale(stream)

    def _claim_stale(self, stream: str) -> None:
        pending: Any = self.redis.xpending_range(stream, GROUP, "-", "+", self.max_size, idle=self.claim_idle_ms)
        if not pending:
            return
        deliveries = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        # XCLAIM counts one more delivery of each entry; with every entry decoded on its own, a claim can no
        # longer fail after that, so the count that MLQ_MAX_ATTEMPTS bounds is of real deliveries only.
        claimed = self._raw("XCLAIM", stream, GROUP, self.name, self.claim_idle_ms, *deliveries)
        items = [self.decode(entry_id, fields) for entry_id, fields in claimed or []]
        now = time.monotonic()
        for it in items:
            it.stream, it.read_at = stream, now
            if deliveries.get(it.entry_id, 0) >= self.max_attempts and it.job_id:
                it.run = False
                it.error = TooManyAttempts(
                    f"the request was taken {deliveries[it.entry_id]} times by inference workers that died before "
                    f"answering (limit MLQ_MAX_ATTEMPTS={self.max_attempts}); it may need more memory or fewer rows"
                ).to_dict()
        log.warning("inference consumer %s: took over %d requests of dead workers", self.name, len(items))
        if items:
            self.serve(items)

    # ---- serving -------------------------------------------------------------------------------------------
    def serve(self, items: list[Item]) -> None:
        """Answer one batch: mark running, predict per model version, finish + reply + ack in one pipeline."""
        self.expire(items)
        if self.router is not None:
            items = self.router.route(items)  # requests for versions another live worker holds go there
        live = [it for it in items if it.run and it.job_id]
        counted = [it.request for it in items if it.request is not None and it.request.counted]
        if live or counted:

            def start(pipe: Pipeline) -> None:
                for it in live:
                    self.jobs.mark_running_in(pipe, it.job_id, self.name)  # type: ignore[arg-type]
                for request in counted:  # taken off the stream: no longer counted against the model's queue cap
                    pipe.zrem(keys.queued_predictions(request.tenant, request.model), request.job_id)

            started = self.jobs.run_pipeline(start)[: len(live)]  # the ZREMs' replies come after
            for it, reply in zip(live, started, strict=True):
                it.run = self.jobs.started(reply)  # else cancelled while queued, or answered by another worker
        groups: dict[tuple[str, str, Any], list[Item]] = {}
        for it in items:
            if it.run and it.request is not None:
                groups.setdefault((it.request.tenant, it.request.model, it.request.version), []).append(it)
        counts = {"rows": 0, "forward_passes": 0, "alone": 0, "expired": sum(1 for it in items if it.expired)}
        regression: dict[tuple[str, str, int], bool] = {}
        for (tenant, model, version), group in groups.items():
            try:
                predictor = self.cache.get(tenant, model, version, requests=len(group))
            except Exception as exc:
                for it in group:
                    it.error = self.error_for(it.job_id or "", exc)
                continue
            regression[(tenant, model, version)] = not predictor.classes
            # Forward passes of at most the model's max_batch_size rows (its serving policy).
            for chunk in chunks(group, self.policies.get(group[0].request).max_batch_size):
                self.predict_group(predictor, chunk, counts)
        self.answer(items, counts, figures_of(items, regression))
        run_shadows(self.redis, self.cache, items)

    def expire(self, items: list[Item]) -> None:
        """Requests whose deadline has passed are not computed: their jobs end `expired` (answered in answer())."""
        _, now_ms = now_rfc3339()
        for it in items:
            deadline = it.request.deadline_ms if it.request is not None else None
            if it.run and it.job_id and deadline is not None and deadline <= now_ms:
                it.run, it.expired = False, True
                it.error = DeadlineExceeded(
                    f"the request's deadline passed {now_ms - deadline} ms before a worker could take it; it was "
                    "not computed (send a longer X-Request-Timeout-Ms, or fewer requests at once)"
                ).to_dict()

    def predict_group(self, predictor: Predictor, group: list[Item], counts: dict[str, int]) -> None:
        """ONE forward pass for every request of `group` (same model version); fall back to one pass per
        request when the batch as a whole fails, so one request's bad rows fail that request alone."""
        n_classes = len(predictor.classes) if predictor.classes else 0
        ready: list[tuple[Item, dict[str, Any]]] = []
        for it in group:
            assert it.request is not None
            try:
                ready.append((it, check_postprocess(it.request.postprocess or None, predictor.task, n_classes)))
            except Exception as exc:
                it.error = self.error_for(it.job_id or "", exc)
        rows = [row for it, _ in ready for row in it.request.inputs]  # type: ignore[union-attr]
        if not ready:
            return
        try:
            scores = predictor.scores(rows)
        except Exception:
            for it, options in ready:
                self._predict_one(predictor, it, options, counts)
            return
        counts["rows"] += len(rows)
        counts["forward_passes"] += 1 if rows else 0
        self.drift.observe(predictor, rows, scores)
        outputs = outputs_of(predictor, scores)
        start = 0
        for it, options in ready:
            n = len(it.request.inputs)  # type: ignore[union-attr]
            it.result = self._result(predictor, predictor.postprocess(scores[start : start + n], options))
            it.outputs = outputs[start : start + n]
            start += n

    def _predict_one(self, predictor: Predictor, it: Item, options: dict[str, Any], counts: dict[str, int]) -> None:
        assert it.request is not None
        counts["alone"] += 1
        try:
            scores = predictor.scores(it.request.inputs)
        except Exception as exc:
            it.error = self.error_for(it.job_id or "", exc)
            return
        counts["rows"] += len(it.request.inputs)
        counts["forward_passes"] += 1
        self.drift.observe(predictor, it.request.inputs, scores)
        it.result = self._result(predictor, predictor.postprocess(scores, options))
        it.outputs = outputs_of(predictor, scores)

    @staticmethod
    def _result(predictor: Predictor, predictions: list[dict[str, Any]]) -> bytes:
        # Encoded once, here; the record stores these bytes as they are.
        return orjson.dumps(
            {"model": predictor.name, "version": predictor.version, "predictions": predictions},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    def answer(self, items: list[Item], counts: dict[str, int], figures: LiveBatch | None = None) -> None:
        """ONE round trip: finish each job and wake its submitter, ack + delete the entries, count the batch.

        Sent again, whole, after Redis lost its scripts (a restart): acks and deletes repeat harmlessly, and the
        batch counters of that one batch count twice."""

        def queue(pipe: Pipeline) -> None:
            for it in items:
                if it.job_id is None:
                    continue
                if it.expired:
                    self.jobs.finish_and_reply_in(pipe, it.job_id, "expired", error=it.error)
                elif it.error is not None:
                    self.jobs.finish_and_reply_in(pipe, it.job_id, "failed", error=it.error)
                elif it.result is not None:
                    self.jobs.finish_and_reply_in(pipe, it.job_id, "succeeded", result=it.result)
                else:  # already final: the script changes nothing and replies with the record as it is
                    self.jobs.finish_and_reply_in(pipe, it.job_id, "failed")
            for stream in STREAMS:
                ids = [it.entry_id for it in items if it.stream == stream]
                if ids:
                    pipe.xack(stream, GROUP, *ids)
                    pipe.xdel(stream, *ids)
            pipe.hincrby(STATS, "batches", 1)
            # Requests are what was decoded; a dropped undecodable entry is no request.
            pipe.hincrby(STATS, "requests", sum(1 for it in items if it.job_id is not None))
            pipe.hincrby(STATS, batch_size_field(len(items)), 1)
            for key, value in counts.items():
                if value:
                    pipe.hincrby(STATS, key, value)
            self.drift.flush_in(pipe)
            if figures is not None:
                figures.write_in(pipe)

        self.jobs.run_pipeline(queue)


def attach(app: Celery, runtime: Runtime, settings: Settings) -> None:
    """Run a consumer in every worker process of `app` that consumes the `inference` queue.

    Started in worker_process_init, i.e. after the fork (the parent never holds a connection or a model), and
    after the runtime's own start-up (connected later, so called later): models are preloaded by then.
    """
    running: list[InferenceConsumer] = []

    def on_process_init(sender: Any = None, **_: Any) -> None:
        if INFERENCE_QUEUE not in app.amqp.queues.consume_from:
            return
        name = f"{sender}:{os.getpid()}"
        consumer = InferenceConsumer(
            runtime.redis,
            runtime.jobs,
            runtime.cache,
            name,
            max_size=settings.batch_max_size,
            max_delay_ms=settings.batch_max_delay_ms,
            max_attempts=settings.max_attempts,
            error_for=runtime.error_for,
            claim_idle_s=settings.inference_claim_idle_s,
            drift=DriftTally.from_settings(runtime.redis, settings),
            max_passover_ms=settings.priority_max_passover_ms,
            router=WarmRouter(runtime.redis, runtime.cache, name, busy_entries=settings.batch_max_size),
        )
        running.append(consumer.start())
        log.info(
            "inference consumer %s started (batches of up to %d rows, %.1f ms)",
            consumer.name,
            settings.batch_max_size,
            settings.batch_max_delay_ms,
        )

    def on_shutdown(**_: Any) -> None:
        while running:
            running.pop().stop()

    signals.worker_process_init.connect(on_process_init, weak=False, dispatch_uid=f"mlq-infer-init-{id(app)}")
    signals.worker_process_shutdown.connect(on_shutdown, weak=False, dispatch_uid=f"mlq-infer-stop-{id(app)}")
    signals.worker_shutdown.connect(on_shutdown, weak=False, dispatch_uid=f"mlq-infer-wstop-{id(app)}")
