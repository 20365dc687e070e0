"""The typed shapes of a job: the record as JobStore decodes it, and the contract's job object. Stdlib only.

Types for the checker, plain dicts at run time (status and type: StrEnum members, JSON as their words): the
JSON the API serves (docs/api.md, "Job object") does not
change. A job's `result` depends on its type (a training's: training.manifest.TrainResult), so it stays JSON here.
"""

from __future__ import annotations

from typing import Any, TypedDict

from store.job_states import JobStatus, JobType


class JobRecord(TypedDict):
    """A job as store/jobs.py's JobStore decodes its Redis hash (`get`, `decode`, `list`, `create`, `wait`).

    Empty hash fields read as None; `progress`, `result`, `error` and `request` are decoded JSON.
    """

    id: str
    type: JobType
    status: JobStatus
    model: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    progress: dict[str, Any] | None
    result: Any
    error: dict[str, Any] | None  # {"type", "message", "errors"?}
    request: dict[str, Any] | None
    tenant: str
    worker: str | None
    created_ms: int


class JobLinks(TypedDict):
    self: str  # the job's URL
    events: str
    cancel: str


class PublicJob(TypedDict):
    """The contract's job object (JobStore.public): no tenant or request internals."""

    id: str
    type: JobType
    status: JobStatus
    model: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    worker: str | None  # the worker of the latest attempt (its Celery node name, or the inference consumer's)
    progress: dict[str, Any] | None
    result: Any
    error: dict[str, Any] | None
    links: JobLinks
