"""A job's statuses and types, and the one table of the status changes each Lua script of store/lua/ may make.

Stdlib only (the API imports it). The scripts are the implementation; TRANSITIONS is their specification:
tests/unit/test_job_states.py drives every script from every status on a real Redis and checks that the changes it
makes are exactly the ones listed here, and docs/architecture.md ("Job states") renders the table.
Named sets after Celery's `celery.states` (READY_STATES, UNREADY_STATES).
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # An online prediction whose deadline passed before a worker took it: never computed (worker/inference.py).
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in READY_STATES


class JobType(StrEnum):
    TRAIN = "train"
    PREDICT = "predict"
    BATCH_PREDICT = "batch_predict"
    SEARCH = "search"
    OPTIMIZE = "optimize"
    ROLLOUT = "rollout"  # an alias's traffic moved step by step (a leased job, like a training)


# A job is created QUEUED (JobStore.create, create_predict.lua) and ends in exactly one READY state.
INITIAL_STATE = JobStatus.QUEUED
READY_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})
UNREADY_STATES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
FINAL_STATUSES = READY_STATES  # the name the code used before this module

Q, R = JobStatus.QUEUED, JobStatus.RUNNING
S, F, C = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED
Transition = tuple[JobStatus, JobStatus]

# Every status change a script may make, as (from, to); a script not listed here changes no status. Why each:
TRANSITIONS: dict[str, frozenset[Transition]] = {
    # An unleased job (an online prediction) starts, or starts again when redelivered; a requested cancel ends it.
    "mark_running": frozenset({(Q, R), (R, R), (Q, C), (R, C)}),
    # A leased attempt begins: from queued, or from running with a dead holder whose message came back before a
    # sweeper noticed; a requested cancel ends it cancelled, used-up attempts end it failed (worker_lost).
    "begin": frozenset({(Q, R), (R, R), (Q, C), (R, C), (Q, F), (R, F)}),
    # A queued job ends at once; a running one is only flagged (its worker stops it).
    "cancel": frozenset({(Q, C)}),
    # Unfenced final writes (an online prediction's, a search's, a failed enqueue's): any unready job ends.
    "finish": frozenset({(u, r) for u in UNREADY_STATES for r in READY_STATES}),
    "finish_reply": frozenset({(u, r) for u in UNREADY_STATES for r in READY_STATES}),
    # A leased attempt's own ending: only while it holds the job (running, its token).
    # (The script takes any final status; `expired` is an online prediction's, which holds no lease.)
    "finish_fenced": frozenset({(R, S), (R, F), (R, C), (R, JobStatus.EXPIRED)}),
    # A dead worker's job: requeued, or ended (cancel requested; attempts used up; past its time limit).
    "sweep": frozenset({(R, Q), (R, C), (R, F)}),
    # A draining worker gives its job back, or ends it cancelled if that was requested.
    "preempt": frozenset({(R, Q), (R, C)}),
    # The requeue's message could not be sent: running again, with a dead holder, for a sweeper to requeue.
    "unrequeue": frozenset({(Q, R)}),
}
# Scripts that read or refresh a job but never change its status.
STATUS_PRESERVING = frozenset({"admit", "claim", "create_predict", "heartbeat", "progress"})
# Scripts that write no job record at all: the fair queues' order (fair_pick only reads a job's status to skip an
# ended one) and the drift counters.
NOT_JOB_SCRIPTS = frozenset({"fair_enqueue", "fair_pick", "drift_count"})
ALLOWED: frozenset[Transition] = frozenset().union(*TRANSITIONS.values())


def transitions_table() -> str:
    """TRANSITIONS as the Markdown table of docs/architecture.md ("Job states"; a test keeps them equal)."""
    order = list(JobStatus)
    rows = ["| script | from → to |", "|---|---|"]
    for script, changes in TRANSITIONS.items():
        ordered = sorted(changes, key=lambda t: (order.index(t[0]), order.index(t[1])))
        rows.append(f"| `{script}` | " + ", ".join(f"{a} → {b}" for a, b in ordered) + " |")
    return "\n".join(rows)
