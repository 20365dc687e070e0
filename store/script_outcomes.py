"""What each Lua script of store/lua/ can answer, as enums (the first word of its reply; see store/lua_loader.py).

StrEnum members compare equal to their words, so a log line or a test may still show "requeued"; code compares
members. SCRIPT_OUTCOMES says which enum answers for which script (tests/unit/test_lua_scripts.py checks that every
word a script returns is a member of its enum). Stdlib only (the API imports it).
"""

from __future__ import annotations

from enum import StrEnum


class BeginOutcome(StrEnum):
    """begin.lua (a leased attempt) and mark_running.lua (unleased jobs: only the first four)."""

    STARTED = "started"  # begin.lua: followed by the attempt's token
    MISSING = "missing"  # no record (it expired, or never was)
    FINAL = "final"  # it already ended: a duplicate or late message
    CANCELLED = "cancelled"  # its cancel was requested: it ended cancelled here
    RUNNING_ELSEWHERE = "running_elsewhere"  # a live attempt holds it
    POISON = "poison"  # its attempts are used up: it ended failed (worker_lost)


class FinishOutcome(StrEnum):
    """finish.lua, finish_fenced.lua, finish_reply.lua."""

    DONE = "done"  # this call recorded the final status
    ALREADY_FINAL = "already_final"  # another final status won first; nothing changed
    FENCED = "fenced"  # finish_fenced.lua: a newer attempt holds the job; nothing changed
    GONE = "gone"  # no record


class CancelOutcome(StrEnum):
    """cancel.lua."""

    CANCELLED = "cancelled"  # it was queued: it ended cancelled at once
    REQUESTED = "requested"  # it runs: flagged, its worker stops it
    ALREADY_FINAL = "already_final"
    GONE = "gone"


class AdmitOutcome(StrEnum):
    """admit.lua."""

    ADMITTED = "admitted"
    FULL = "full"  # the tenant is at MLQ_MAX_ACTIVE_JOBS


class CreateOutcome(StrEnum):
    """create_predict.lua."""

    CREATED = "created"
    FULL = "full"  # the model's queue cap (max_queued) is reached: nothing was written


class ProgressOutcome(StrEnum):
    """progress.lua."""

    RECORDED = "recorded"
    NOT_RUNNING = "not_running"  # a late report of a job that ended or was requeued: dropped


class HeartbeatOutcome(StrEnum):
    """heartbeat.lua."""

    REFRESHED = "refreshed"
    LOST = "lost"  # the attempt no longer holds the job (final, requeued, a newer attempt runs)


class SweepOutcome(StrEnum):
    """sweep.lua; the first three mean the sweeper did nothing."""

    ALIVE = "alive"  # its lease holds
    NOT_RUNNING = "not_running"  # not running any more: dropped from the running set
    NOT_LEASED = "not_leased"  # a job type without attempt leases (online predictions, searches)
    REQUEUED = "requeued"  # back to queued: the sweeper sends its message again
    CANCELLED = "cancelled"
    POISON = "poison"  # attempts used up: failed (worker_lost)
    TIME_LIMIT = "time_limit"  # its attempt ran past MLQ_JOB_TIME_LIMIT_S: failed (time_limit)


class PreemptOutcome(StrEnum):
    """preempt.lua."""

    REQUEUED = "requeued"  # back to queued: the draining worker sends its message again
    CANCELLED = "cancelled"  # its cancel was requested: it ended cancelled instead
    FENCED = "fenced"  # the attempt no longer holds the job; nothing changed


class UnrequeueOutcome(StrEnum):
    """unrequeue.lua."""

    RESTORED = "restored"
    FENCED = "fenced"


class ClaimOutcome(StrEnum):
    """claim.lua."""

    CLAIMED = "claimed"
    FENCED = "fenced"  # not the current attempt
    CANCELLED = "cancelled"  # the job's cancel was requested
    HELD = "held"  # followed by the attempt that holds the claim


class DriftCountOutcome(StrEnum):
    """drift_count.lua."""

    COUNTED = "counted"  # followed by the number of fields added


class FairEnqueueOutcome(StrEnum):
    """fair_enqueue.lua."""

    QUEUED = "queued"
    ALREADY_QUEUED = "already_queued"  # a re-send of a job still in its flow: nothing changed


class FairPickOutcome(StrEnum):
    """fair_pick.lua."""

    PICKED = "picked"  # followed by the job's id: run that job
    WAIT = "wait"  # only tenants at MLQ_MAX_RUNNING_PER_TENANT have queued jobs: ask again soon
    EMPTY = "empty"  # nothing is queued fairly: run the message's own job (a re-send, or an older message)


SCRIPT_OUTCOMES: dict[str, type[StrEnum]] = {
    "admit": AdmitOutcome,
    "begin": BeginOutcome,
    "cancel": CancelOutcome,
    "claim": ClaimOutcome,
    "create_predict": CreateOutcome,
    "drift_count": DriftCountOutcome,
    "fair_enqueue": FairEnqueueOutcome,
    "fair_pick": FairPickOutcome,
    "finish": FinishOutcome,
    "finish_fenced": FinishOutcome,
    "finish_reply": FinishOutcome,
    "heartbeat": HeartbeatOutcome,
    "mark_running": BeginOutcome,
    "preempt": PreemptOutcome,
    "progress": ProgressOutcome,
    "sweep": SweepOutcome,
    "unrequeue": UnrequeueOutcome,
}
