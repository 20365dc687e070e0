"""Guarded rollouts, the torch-free part: the request, its checks, the guard, and the alias lock. The API checks
and queues a rollout with it; the worker's task (worker/rollout_task.py) runs the steps with it.

A rollout moves an alias from its baseline version to a candidate in steps (e.g. 5, 25, 50, 100 percent). At each
step the candidate's live figures are compared with the guard from the step's own counters (the difference of
the versions' total hashes, store/live_metrics.py): the guard is judged once the candidate answered
`min_requests` in the step and again until `step_seconds` passed; a trip restores the alias at once. While the
guard asks for `min_agreement`, the candidate also shadows the baseline's requests, so agreement is measured on
the same rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from store import keys
from store.traffic import TrafficPolicy
from training.errors import MLQError

GUARD_KEYS = {"max_error_rate", "max_p99_ms", "min_agreement", "min_requests"}
DEFAULT_GUARD: dict[str, float] = {"max_error_rate": 0.01, "min_requests": 100}
MAX_STEP_SECONDS = 86_400


class InvalidRollout(MLQError):
    """Raised when a rollout request is refused: steps not increasing, an unknown guard key, a busy alias."""

    code = "invalid_rollout"


class GuardTripped(MLQError):
    """Raised when a rollout's candidate breaks its guard: the alias went back to the baseline."""

    code = "guard_tripped"
    status = 500

    def __init__(self, message: str, *, guard: str, step: int, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.guard, self.step, self.figures = guard, step, figures

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "guard": self.guard, "step": self.step, "figures": self.figures}


def refuse(loc: list[Any], msg: str) -> InvalidRollout:
    return InvalidRollout(f"{'.'.join(map(str, loc))}: {msg}", errors=[{"loc": loc, "msg": msg}])


@dataclass(frozen=True)
class RolloutRequest:
    """A rollout job as it travels to a worker; `previous` is the alias's policy before it, restored on a trip."""

    job_id: str
    tenant: str
    model: str
    alias: str
    to: int
    steps: list[int]
    step_seconds: float
    guard: dict[str, float]
    previous: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, data: dict[str, Any]) -> RolloutRequest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def baseline(self) -> int:
        return TrafficPolicy.from_dict(self.previous).primary


def check_steps(steps: Any) -> list[int]:
    if not isinstance(steps, list) or not steps:
        raise refuse(["body", "steps"], "must be a list of percents, e.g. [5, 25, 50, 100]")
    for i, step in enumerate(steps):
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100:
            raise refuse(["body", "steps", i], "must be a whole percent from 1 to 100")
        if i and step <= steps[i - 1]:
            raise refuse(["body", "steps", i], f"steps must increase: {step} follows {steps[i - 1]}")
    if steps[-1] != 100:
        raise refuse(["body", "steps"], "the last step must be 100 (the rollout ends with all traffic moved)")
    return list(steps)


def check_guard(guard: Any) -> dict[str, float]:
    if guard is None:
        return dict(DEFAULT_GUARD)
    if not isinstance(guard, dict):
        raise refuse(["body", "guard"], f"must be an object with keys {', '.join(sorted(GUARD_KEYS))}")
    for key, value in guard.items():
        if key not in GUARD_KEYS:
            raise refuse(["body", "guard", key], f"unknown guard; known: {', '.join(sorted(GUARD_KEYS))}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise refuse(["body", "guard", key], "must be a number >= 0")
        if key in ("max_error_rate", "min_agreement") and value > 1:
            raise refuse(["body", "guard", key], "is a share: from 0 to 1")
    return {**DEFAULT_GUARD, **{k: float(v) for k, v in guard.items()}}


def step_policy(request: RolloutRequest, percent: int) -> TrafficPolicy:
    """The alias's policy at one step: baseline and candidate shares, the candidate shadowing the baseline's
    requests while agreement is guarded."""
    if percent >= 100:
        return TrafficPolicy({request.to: 100})
    shadow = request.to if "min_agreement" in request.guard else None
    return TrafficPolicy({request.baseline: 100 - percent, request.to: percent}, shadow, 100 if shadow else 0)


def judge(guard: dict[str, float], candidate: dict[str, Any]) -> tuple[str, str] | None:
    """(guard name, what was seen) when the candidate's step figures break the guard, else None."""
    if candidate["error_rate"] > guard.get("max_error_rate", 1.0):
        return "max_error_rate", f"error rate {candidate['error_rate']:.3f} > {guard['max_error_rate']}"
    p99 = candidate["latency_ms"]["p99"]
    if "max_p99_ms" in guard and p99 is not None and p99 > guard["max_p99_ms"]:
        return "max_p99_ms", f"p99 latency <= {p99} ms bucket > {guard['max_p99_ms']} ms"
    shadow = candidate.get("shadow") or {}
    agreement = shadow.get("agreement")
    if "min_agreement" in guard and agreement is not None and agreement < guard["min_agreement"]:
        return "min_agreement", f"agreement {agreement:.3f} < {guard['min_agreement']}"
    return None


def lock(client: redis.Redis, tenant: str, model: str, alias: str, job_id: str) -> str | None:
    """Take the alias for `job_id`; returns the job that holds it already (None when taken)."""
    key = keys.rollout_lock(tenant, model, alias)
    if client.set(key, job_id, nx=True):
        return None
    holder: Any = client.get(key)
    return holder.decode() if isinstance(holder, bytes) else holder


def unlock(client: redis.Redis, tenant: str, model: str, alias: str, job_id: str) -> None:
    key = keys.rollout_lock(tenant, model, alias)
    holder = client.get(key)
    if (holder.decode() if isinstance(holder, bytes) else holder) == job_id:
        client.delete(key)
