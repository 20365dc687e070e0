"""Hyperparameter searches as job records: a search fans out one train job per trial and the last one concludes it.

Torch-free (stdlib, redis and the stdlib registry): the API cancels searches with it, the workers run them.

Why job records and not a Celery group/chord: a chord counts its members in Celery's result backend, which mlqueue
does not use (the job record is the truth, results are ignored); a chord's callback never runs when a member
fails, while a failed trial must not fail the search; and a trial that is requeued by the stale-job sweeper is a
new message the chord knows nothing about. So each trial is an ordinary `train` job (type train, `parent` = the
search id) that any train worker picks up, with the leases, heartbeat, resume-from-checkpoint and cancel flag of
any training. Whenever a trial starts or ends, `trial_changed` recomputes the search's progress from the trial
records; the call that finds every trial final concludes the search: it registers the best trial's saved model
(one concluder, by a SET NX claim) or ends the search cancelled or failed.

Every party writes before it reads (a trial records its final status, then reads the others; a cancel flags the
search and its trials, then reads them), so the last change is always seen by someone who then concludes.

With an artifact store (MLQ_ARTIFACTS) the concluder may be on another host than the best trial: a trial that
succeeds publishes its folder to searches/<tenant>/<search>/<trial>/ (files, then index.json with their sha256),
and the concluder downloads and checks it when it lacks the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from store import keys
from store.artifacts import ArtifactStore
from store.contract import FINAL_STATUSES, JobType, SearchRequest
from store.jobs import JobConflict, JobStore
from store.records import JobRecord
from training.errors import ArtifactTampered, Cancelled, NoTrialSucceeded, SearchFailed
from training.registry import ModelRegistry, sha256_file

log = logging.getLogger(__name__)

FINAL = {s.value for s in FINAL_STATUSES}
MAXIMIZE = "maximize"
DEFAULT_METRIC = {"classification": "f1", "regression": "rmse"}
DIRECTIONS = {
    "f1": MAXIMIZE,
    "accuracy": MAXIMIZE,
    "precision": MAXIMIZE,
    "recall": MAXIMIZE,
    "roc_auc": MAXIMIZE,
    "r2": MAXIMIZE,
    "rmse": "minimize",
    "mae": "minimize",
}
SAVED_MANIFEST = "manifest.json"  # training/pipeline.py's SAVED_MANIFEST (that module needs torch)


def concluding_key(search_id: str) -> str:
    return keys.search_concluding(search_id)


class Searches:
    """Start, follow, conclude and cancel the searches of one Redis and one artifact store."""

    def __init__(
        self, jobs: JobStore, registry: ModelRegistry, searches_dir: Path, store: ArtifactStore | None = None
    ) -> None:
        self.jobs = jobs
        self.registry = registry
        self.searches_dir = Path(searches_dir)
        self.store = store

    def trial_dir(self, tenant: str, search_id: str, trial_id: str) -> Path:
        """Where a trial saves its model (`artifact/`) and manifest until the search registers the best."""
        return self.searches_dir / tenant / search_id / trial_id

    def publish_trial(self, tenant: str, search_id: str, trial_id: str) -> None:
        """Copy a finished trial's folder to the store (no-op without one): the concluder may be elsewhere."""
        if self.store is None:
            return
        directory, prefix = self.trial_dir(tenant, search_id, trial_id), f"searches/{tenant}/{search_id}/{trial_id}/"
        index = {}
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = file.relative_to(directory).as_posix()
            index[rel] = sha256_file(file)
            self.store.put_file(prefix + rel, file)
        self.store.put_bytes(prefix + "index.json", json.dumps(index).encode())  # last: the trial is complete

    def fetch_trial(self, tenant: str, search_id: str, trial_id: str) -> Path:
        """The trial's folder on this host: as saved here, else downloaded from the store and checked."""
        directory = self.trial_dir(tenant, search_id, trial_id)
        if (directory / SAVED_MANIFEST).is_file() or self.store is None:
            return directory
        prefix = f"searches/{tenant}/{search_id}/{trial_id}/"
        index: dict[str, str] = json.loads(self.store.get_bytes(prefix + "index.json"))
        staging = directory.with_name(f".fetch-{trial_id}")
        shutil.rmtree(staging, ignore_errors=True)
        for rel, sha in index.items():
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise ArtifactTampered(f"trial {trial_id}: listed file {rel!r} is not a plain relative path")
            self.store.get_file(prefix + rel, staging / rel)
            if sha256_file(staging / rel) != sha:
                shutil.rmtree(staging, ignore_errors=True)
                raise ArtifactTampered(f"trial {trial_id}: {rel} downloaded from the store does not match its sha256")
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        return directory

    # -- the search's own message: fan out --------------------------------------------------------------------

    def fan_out(self, payload: dict[str, Any], hostname: str, send: Callable[[dict[str, Any]], None]) -> None:
        """Create and send the trial jobs (again, on a redelivery: a duplicate trial message is harmless)."""
        request = SearchRequest.decode(payload)
        if not self.jobs.mark_running(request.job_id, hostname):
            log.info("search %s not started: it ended or was cancelled", request.job_id)
            return
        for index, trial in enumerate(request.trials):
            existing = self.jobs.get(trial["id"])
            if existing is not None and existing["status"] != "queued":
                continue
            message = request.trial_request(index).encode()
            if existing is None:
                record = {k: v for k, v in message.items() if k not in ("job_id", "tenant")}
                self.jobs.create(request.tenant, JobType.TRAIN.value, request.model, record, job_id=trial["id"])
            send(message)
        # A cancel that came while the trials were being created may have missed some: cancel them now.
        if self.jobs.cancel_requested(request.job_id):
            self._cancel_trials(request)
        self.trial_changed(request.job_id)
        log.info("search %s: %d trials queued", request.job_id, len(request.trials))

    # -- progress and conclusion ----------------------------------------------------------------------------------

    def trial_changed(self, search_id: str, hostname: str = "") -> None:
        """Recompute the search's progress from its trial records; conclude it once every trial is final."""
        search = self.jobs.get(search_id)
        if search is None or search["status"] in FINAL:
            if search is not None:
                self._cleanup(search)
            return
        request = SearchRequest.decode({**(search["request"] or {}), "job_id": search_id, "tenant": search["tenant"]})
        table = self.table(request)
        done = sum(1 for row in table if row["status"] in FINAL)
        running = sum(1 for row in table if row["status"] == "running")
        metric, direction, rank_by = ranking(request, table)
        best = table[0] if table and table[0]["score"] is not None else None
        message = f"{done}/{len(table)} trials done"
        if best is not None:
            message += f"; best {rank_by} {metric} {best['score']:.4g} (trial {best['trial']})"
        self.jobs.set_progress(
            search_id,
            {
                "fraction": round(done / len(table), 4) if table else 1.0,
                "message": message,
                "trials_done": done,
                "trials_total": len(table),
                "trials_running": running,
                "metric": metric,
                "direction": direction,
                "rank_by": rank_by,
                "best": _brief(best),
                "trials": [_brief(row) for row in table],
            },
        )
        if done == len(table):
            self.conclude(search, request, table, hostname)

    def table(self, request: SearchRequest) -> list[dict[str, Any]]:
        """One row per trial (params, status, metrics, cv, score, duration, error), best first."""
        with self.jobs.redis.pipeline(transaction=False) as pipe:
            for trial in request.trials:
                pipe.hgetall(self.jobs.key(trial["id"]))
            raws = pipe.execute()
        rows = []
        for index, (trial, raw) in enumerate(zip(request.trials, raws, strict=True)):
            job: Mapping[str, Any] = (
                self.jobs.decode(raw) if raw else {"status": "queued", "result": None, "error": None}
            )
            result = job.get("result") or {}
            rows.append(
                {
                    "trial": index,
                    "id": trial["id"],
                    "algorithm": trial["algorithm"],
                    "params": trial["params"],
                    "status": job["status"],
                    "score": None,
                    "metrics": _scalars(result.get("metrics")),
                    "cv": result.get("cv"),
                    "task": result.get("task"),
                    "duration_s": result.get("duration_s"),
                    "epochs_run": result.get("epochs_run"),
                    "error": job.get("error"),
                }
            )
        metric, direction, rank_by = ranking(request, rows)
        for row in rows:
            row["score"] = score(row, metric, rank_by)
        # Scored trials by the metric, best first; then the rest (failed, cancelled, unfinished) in trial order.
        sign = -1.0 if direction == MAXIMIZE else 1.0
        rows.sort(key=lambda r: (r["score"] is None, sign * (r["score"] or 0.0), r["trial"]))
        return rows

    def conclude(
        self, search: JobRecord, request: SearchRequest, table: list[dict[str, Any]], hostname: str = ""
    ) -> None:
        """Register the best trial's model, or end the search cancelled or failed. Only one caller gets to."""
        search_id = search["id"]
        if not self.jobs.redis.set(concluding_key(search_id), hostname or "1", nx=True, ex=self.jobs.ttl_s):
            return
        status, result, error = self._outcome(search, request, table)
        # Cleaned up before the search is seen final: whoever sees it final sees its trials' files gone.
        self._cleanup(search)
        self.jobs.finish(search_id, status, result=result, error=error)

    def _outcome(
        self, search: JobRecord, request: SearchRequest, table: list[dict[str, Any]]
    ) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """(status, result, error) of a search whose trials all ended; registers the best trial's model."""
        search_id = search["id"]
        metric, direction, rank_by = ranking(request, table)
        summary: dict[str, Any] = {
            "model": request.model,
            "version": None,
            "metric": metric,
            "direction": direction,
            "rank_by": rank_by,
            "trials": table,
        }
        if self.jobs.cancel_requested(search_id):
            return (
                "cancelled",
                summary,
                Cancelled("the search was cancelled; its trials stopped and no version was registered").to_dict(),
            )
        best = table[0] if table and table[0]["score"] is not None else None
        if best is None:
            errors = [row["error"] for row in table if row.get("error")]
            first = f"; the first error: {errors[0].get('message')}" if errors else ""
            return (
                "failed",
                summary,
                NoTrialSucceeded(f"none of the {len(table)} trials produced {rank_by} {metric}{first}").to_dict(),
            )
        try:
            directory = self.fetch_trial(search["tenant"], search_id, best["id"])
            manifest = json.loads((directory / SAVED_MANIFEST).read_text())
            manifest["job_id"] = search_id
            manifest["search"] = {
                "id": search_id,
                "metric": metric,
                "direction": direction,
                "rank_by": rank_by,
                "best_trial": best["trial"],
                "best_trial_job_id": best["id"],
                "trials": table,
            }
            registered = self.registry.register(search["tenant"], request.model, directory / "artifact", manifest)
        except Exception as exc:
            log.exception("search %s could not register its best trial", search_id)
            return (
                "failed",
                summary,
                SearchFailed(f"the search could not register its best trial: {type(exc).__name__}: {exc}").to_dict(),
            )
        summary.update(
            version=registered["version"],
            best=_brief(best),
            metrics=best["metrics"],
            cv=best.get("cv"),
            params=best["params"],
            algorithm=best["algorithm"],
        )
        log.info(
            "search %s: trial %d is best (%s %s = %s); registered %s version %s",
            search_id,
            best["trial"],
            rank_by,
            metric,
            best["score"],
            request.model,
            registered["version"],
        )
        return "succeeded", summary, None

    def _cleanup(self, search: JobRecord) -> None:
        # The trials' models are only needed until the best one is registered (registering moves its files).
        shutil.rmtree(self.searches_dir / search["tenant"] / search["id"], ignore_errors=True)
        if self.store is not None:
            with contextlib.suppress(Exception):  # a leftover costs bucket space only; a lifecycle rule can sweep it
                self.store.delete(self.store.keys(f"searches/{search['tenant']}/{search['id']}/"))

    # -- cancel ---------------------------------------------------------------------------------------------------

    def cancel(self, search_id: str) -> JobRecord:
        """Cancel a search and every trial of it that has not ended; JobConflict if the search already ended.

        A queued search ends at once (its trials do not exist yet); a running one ends `cancelled` once its
        running trials stopped (within one batch), with no version registered."""
        job = self.jobs.request_cancel(search_id)  # flags it (a queued search ends cancelled here)
        request = SearchRequest.decode({**(job["request"] or {}), "job_id": search_id, "tenant": job["tenant"]})
        self._cancel_trials(request)
        self.trial_changed(search_id)
        return self.jobs.get(search_id) or job

    def _cancel_trials(self, request: SearchRequest) -> None:
        for trial in request.trials:
            # Not created yet (fan_out checks the flag after creating them), or already ended: nothing to do.
            with contextlib.suppress(KeyError, JobConflict):
                self.jobs.request_cancel(trial["id"])


def ranking(request: SearchRequest, rows: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(metric, direction, rank_by) with the defaults filled in from the trials' task and the split."""
    task = request.task or next((r["task"] for r in rows if r.get("task")), None) or "classification"
    metric = request.metric or DEFAULT_METRIC[task]
    direction = request.direction or DIRECTIONS.get(metric, MAXIMIZE)
    rank_by = request.rank_by or ("cv" if (request.split or {}).get("cv") else "test")
    return metric, direction, rank_by


def score(row: dict[str, Any], metric: str, rank_by: str) -> float | None:
    """The number a trial is ranked by: the CV mean or the test value of `metric`; None if it has none."""
    if row["status"] != "succeeded":
        return None
    source = ((row.get("cv") or {}).get("mean") or {}) if rank_by == "cv" else (row.get("metrics") or {})
    value = source.get(metric)
    return float(value) if isinstance(value, int | float) else None


def _scalars(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {k: v for k, v in metrics.items() if v is None or isinstance(v, int | float)}


def _brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A trial for the progress object: what a live table shows, not the whole result."""
    if row is None:
        return None
    return {k: row.get(k) for k in ("trial", "id", "algorithm", "params", "status", "score", "duration_s")}
