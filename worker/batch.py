"""The task `mlqueue.batch_predict`: score a whole uploaded dataset, a chunk at a time, resumable after a kill.

A batch prediction is a leased job exactly like a training (store/leases.py): `Leases.begin()` fences the
attempt, `JobHeartbeat` keeps its lease, `CancelCheck` is asked before every chunk (cancel, drain on SIGTERM, lease
lost), the sweepers requeue it when its worker dies, and `WorkerRuntime.conclude()` writes the final status only
while this attempt still holds the job. What it checkpoints is its position in the file:

    MLQ_HOME/checkpoints/<job>/part-000000.csv …   one file per chunk done, renamed into place whole
    MLQ_HOME/checkpoints/<job>/checkpoint.json     parts done, where the next chunk starts, rows done and failed

The checkpoint is written after its part, so a kill between the two redoes that chunk into the same part name: the
output, the parts concatenated in order, holds every row exactly once. Cancel stops before the next chunk and
removes the parts: no partial output is ever visible. Batch workers are their own processes on their own queue,
reniced (MLQ_BATCH_NICE) so that online inference on the same machine gets the CPU first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery, signals

from store.backends import output_store
from store.batch_format import OutputColumns, assemble, write_part
from store.contract import BATCH_PREDICT_TASK, BATCH_QUEUE, INFERENCE_QUEUE, BatchPredictRequest, JobType
from store.outputs import MEDIA_TYPES, filename
from training.errors import AllRowsFailed, Cancelled, ColumnNotFound
from training.postprocess import check_postprocess
from worker.attempt import Attempt, Ending, LeasedJob, Verdict, register_leased
from worker.batch_reader import chunks, read_header
from worker.batch_scoring import score_chunk
from worker.drift_tally import DriftTally

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class BatchRun:
    """One attempt at one batch prediction: from its checkpoint (if any) to the assembled output."""

    def __init__(self, runtime: Runtime, request: BatchPredictRequest, should_stop: Callable[[], bool]) -> None:
        self.runtime = runtime
        self.request = request
        self.should_stop = should_stop
        self.work = runtime.settings.checkpoints_dir / request.job_id

    def fingerprint(self, dataset: dict[str, Any]) -> dict[str, Any]:
        """What a checkpoint must match to be resumed (anything else starts over)."""
        r = self.request
        return {
            "dataset_sha256": dataset.get("sha256"),
            "model": r.model,
            "version": r.version,
            "columns": r.columns,
            "format": r.format,
            "postprocess": r.postprocess,
        }

    def load_state(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        fresh = {
            "fingerprint": fingerprint,
            "parts": 0,
            "offset": 0,
            "rows_done": 0,
            "rows_failed": 0,
            "first_error": None,
        }
        try:
            state = json.loads((self.work / CHECKPOINT).read_text())
        except (OSError, ValueError):
            state = None
        usable = (
            isinstance(state, dict)
            and state.get("fingerprint") == fingerprint
            and isinstance(state.get("parts"), int)
            and set(fresh) <= set(state)
        )
        if not usable or not all(self.part(i).is_file() for i in range(state["parts"])):
            shutil.rmtree(self.work, ignore_errors=True)
            self.work.mkdir(parents=True, exist_ok=True)
            return fresh
        log.info("job %s: resuming after %d rows (%d parts)", self.request.job_id, state["rows_done"], state["parts"])
        return dict(state)

    def part(self, index: int) -> Path:
        return self.work / f"part-{index:06d}.{self.request.format}"

    def report(self, state: dict[str, Any], total: int, rows_now: int, started: float) -> None:
        """Rows done of total, the rate of this attempt and the time left, through JobStore.set_progress."""
        done, failed = state["rows_done"], state["rows_failed"]
        elapsed = time.monotonic() - started
        rate = rows_now / elapsed if rows_now and elapsed > 0 else None
        eta = round((total - done) / rate, 1) if rate else None
        message = (
            f"{done}/{total} rows" + (f", {rate:.0f} rows/s" if rate else "") + (f", {failed} failed" if failed else "")
        )
        progress = {
            "fraction": round(done / total, 4) if total else None,
            "rows_done": done,
            "rows_total": total,
            "rows_failed": failed,
            "rows_per_s": round(rate, 1) if rate else None,
            "eta_s": eta,
            "message": message,
        }
        try:
            self.runtime.jobs.set_progress(self.request.job_id, progress)
        except Exception as exc:  # noqa: BLE001 - progress is best effort; the checkpoint is what counts
            log.warning("job %s: progress not recorded: %s", self.request.job_id, exc)

    def run(self) -> dict[str, Any]:
        r, runtime = self.request, self.runtime
        started = time.monotonic()
        predictor = runtime.cache.get(r.tenant, r.model, r.version)
        options = check_postprocess(
            r.postprocess or None, predictor.task, len(predictor.classes) if predictor.classes else 0
        )
        columns = OutputColumns(r.columns, predictor.task, predictor.classes, options["output"])
        dataset = runtime.datasets.get(r.tenant, r.dataset_id)
        path = runtime.datasets.path(r.tenant, r.dataset_id)
        positions = {name: i for i, name in enumerate(read_header(path))}
        missing = [c for c in [*predictor.features, *r.columns] if c not in positions]
        if missing:
            raise ColumnNotFound(
                f"dataset {r.dataset_id} has no column {', '.join(map(repr, missing))}"
                f"; model {r.model} v{r.version} needs {', '.join(predictor.features)}"
            )
        total = int(dataset["rows"])
        state = self.load_state(self.fingerprint(dataset))
        rows_now = 0
        self.report(state, total, rows_now, started)
        drift = DriftTally.from_settings(runtime.redis, runtime.settings)  # batch rows count as live data too
        for chunk in chunks(path, runtime.settings.batch_chunk_rows, state["offset"], state["rows_done"]):
            if self.should_stop():
                raise Cancelled("batch prediction stopped")
            result = score_chunk(predictor, chunk.rows, positions, columns, partial(drift.observe, predictor))
            drift.flush()
            write_part(result, self.part(state["parts"]), r.format)
            failed = [i for i, e in enumerate(result.errors) if e]
            if failed and state["first_error"] is None:
                state["first_error"] = {"row": chunk.first + failed[0], "error": result.errors[failed[0]]}
            state.update(
                parts=state["parts"] + 1,
                offset=chunk.end,
                rows_done=state["rows_done"] + result.n,
                rows_failed=state["rows_failed"] + len(failed),
            )
            _write_json(self.work / CHECKPOINT, state)
            rows_now += result.n
            self.report(state, total, rows_now, started)
        if self.should_stop():
            raise Cancelled("batch prediction stopped")
        return self.finish(state, columns, started)

    def finish(self, state: dict[str, Any], columns: OutputColumns, started: float) -> dict[str, Any]:
        r = self.request
        done, failed, first = state["rows_done"], state["rows_failed"], state["first_error"]
        if done and failed == done:
            raise AllRowsFailed(
                f"none of the {done} rows could be scored; the first, row {first['row']}: {first['error']}",
                errors=[{"loc": ["rows", first["row"]], "msg": first["error"]}],
            )
        name = filename(r.model, r.version, r.job_id, r.format)
        outputs = output_store(self.runtime.settings)
        folder = outputs.folder(r.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        size, sha256 = assemble([self.part(i) for i in range(state["parts"])], columns, r.format, folder / name)
        outputs.publish(r.job_id, name)  # to the artifact store, if any: the API may be on another host
        duration = time.monotonic() - started
        return {
            "model": r.model,
            "version": r.version,
            "dataset": r.dataset_id,
            "rows": done,
            "rows_scored": done - failed,
            "rows_failed": failed,
            "first_error": first,
            "output": {
                "url": f"/v1/jobs/{r.job_id}/output",
                "filename": name,
                "format": r.format,
                "media_type": MEDIA_TYPES[r.format],
                "size_bytes": size,
                "sha256": sha256,
                "columns": columns.names,
            },
            "duration_s": round(duration, 3),
        }


class BatchJob(LeasedJob):
    """A batch prediction as a leased job: its parts and checkpoint.json are kept for the next attempt."""

    checkpoints = True
    kept = "parts and checkpoint kept"

    def __init__(self, runtime: Runtime, request: BatchPredictRequest) -> None:
        self.runtime, self.request, self.job_id = runtime, request, request.job_id

    def run(self, attempt: Attempt) -> dict[str, Any]:
        return BatchRun(self.runtime, self.request, attempt.should_stop).run()

    def resend(self) -> object:
        app = self.runtime.app
        assert app is not None  # a task runs inside a worker, which has its Celery app
        # Into its tenant's fair queue first: the message runs whichever batch job is fairly next.
        self.runtime.fair.enqueue(BATCH_QUEUE, self.request.tenant, self.job_id)
        return app.send_task(BATCH_PREDICT_TASK, args=[self.request.encode()], task_id=self.job_id, queue=BATCH_QUEUE)

    def settle(self, attempt: Attempt, verdict: Verdict) -> Verdict:
        if verdict.ending is not Ending.SUCCEEDED:
            # No partial output is ever visible. Only while this attempt still holds the job: a newer attempt's
            # finished output is not ours to remove.
            with contextlib.suppress(Exception):
                if self.runtime.leases.heartbeat(self.job_id, attempt.token, attempt.hostname):
                    output_store(self.runtime.settings).remove(self.job_id)
        return verdict


def batch_job(runtime: Runtime) -> Callable[[dict[str, Any], str], LeasedJob]:
    return lambda payload, _: BatchJob(runtime, BatchPredictRequest.decode(payload))


def register_batch(app: Celery, runtime: Runtime) -> None:
    """Register `mlqueue.batch_predict` on `app`; processes that serve only batch work lower their priority."""
    register_leased(
        app, BATCH_PREDICT_TASK, runtime, batch_job(runtime), fair=(BATCH_QUEUE, JobType.BATCH_PREDICT.value)
    )

    def on_process_init(**_: Any) -> None:
        queues = app.amqp.queues.consume_from
        # Renice the task thread only (Linux niceness is per thread): the heartbeats started earlier keep
        # theirs. A process that also serves online inference is left alone: its consumer thread must not wait.
        if BATCH_QUEUE in queues and INFERENCE_QUEUE not in queues and runtime.settings.batch_nice:
            os.nice(runtime.settings.batch_nice)

    signals.worker_process_init.connect(on_process_init, weak=False, dispatch_uid=f"mlq-batch-init-{id(app)}")
