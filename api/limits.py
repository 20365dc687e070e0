"""Limits on what a client controls, beyond the schema's bounds: each is a setting, and every refusal names it.

- job submissions per tenant per minute (MLQ_RATE_LIMIT_PER_MINUTE): a Redis fixed window, INCR + EXPIRE, so
  every API process counts against the same window; 429 with Retry-After = the seconds left in the window;
- queued + running jobs per tenant (MLQ_MAX_ACTIVE_JOBS): a slot claimed atomically in the job store, given
  back when the job ends; 429 with Retry-After;
- training epochs (MLQ_MAX_EPOCHS) and hidden layer widths (MLQ_MAX_HIDDEN_UNITS): 422 before anything is queued.
"""

from __future__ import annotations

import time
from typing import Any

from api.problems import ApiError, LimitExceeded, RateLimited, TooManyJobs
from api.services import services, tenant
from store import keys

WINDOW_S = 60
ACTIVE_RETRY_AFTER_S = 5


def check_rate_limit() -> None:
    """Count one job submission for the tenant in this minute's window; 429 past MLQ_RATE_LIMIT_PER_MINUTE."""
    svc = services()
    limit = svc.settings.rate_limit_per_minute
    if limit <= 0:
        return
    now = time.time()
    window = int(now // WINDOW_S)
    key = keys.rate_window(tenant(), window)
    with svc.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, WINDOW_S * 2)  # outlives its window a little: clocks of API hosts differ
        count, _ = pipe.execute()
    if int(count) > limit:
        retry_after = max(1, int((window + 1) * WINDOW_S - now) + 1)
        raise RateLimited(
            f"more than {limit} job submissions in a minute for this tenant (the limit is "
            f"MLQ_RATE_LIMIT_PER_MINUTE={limit}); retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def too_many_active() -> ApiError:
    limit = services().settings.max_active_jobs
    return TooManyJobs(
        f"this tenant already has {limit} queued or running jobs (the limit is "
        f"MLQ_MAX_ACTIVE_JOBS={limit}); wait for some to finish or cancel them",
        headers={"Retry-After": str(ACTIVE_RETRY_AFTER_S)},
    )


def check_training_params(params: dict[str, Any]) -> None:
    """422 naming the setting when epochs or a hidden layer's width exceed the configured maximum."""
    settings = services().settings
    errors: list[dict[str, Any]] = []
    epochs = params.get("epochs")
    if isinstance(epochs, int) and epochs > settings.max_epochs:
        errors.append(
            {"loc": ["params", "epochs"], "msg": f"must be <= {settings.max_epochs} (MLQ_MAX_EPOCHS), got {epochs}"}
        )
    layers = params.get("hidden_layers")
    if isinstance(layers, list):
        for i, width in enumerate(layers):
            if isinstance(width, int) and width > settings.max_hidden_units:
                errors.append(
                    {
                        "loc": ["params", "hidden_layers", i],
                        "msg": f"must be <= {settings.max_hidden_units} units (MLQ_MAX_HIDDEN_UNITS), got {width}",
                    }
                )
    if errors:
        raise LimitExceeded("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors), errors=errors)
