"""mlqueue: an async job backend for machine learning. This package is what a user imports and runs.

`from mlqueue import Client` gives the REST client; `mlq` is the command line. Importing this package loads only
httpx and the standard library (no torch, pandas, scikit-learn or training code).
"""

from mlqueue.client import Client
from mlqueue.errors import (
    BadRequest,
    Conflict,
    JobCancelled,
    JobFailed,
    MLQueueError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    Unreachable,
    ValidationFailed,
    WaitTimeout,
)

__all__ = [
    "BadRequest",
    "Client",
    "Conflict",
    "JobCancelled",
    "JobFailed",
    "MLQueueError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "Unreachable",
    "ValidationFailed",
    "WaitTimeout",
]
