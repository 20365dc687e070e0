"""The one way a job goes back to a client: submissions, predictions and GET /v1/jobs/{id} all answer through here.

A request that created a job answers 202 + Location + Retry-After unless it waited (`?wait=`, `Prefer: wait=`) and
the job ended meanwhile (then 200, like a GET). A GET is always 200, with Retry-After while the job has not ended.
`Preference-Applied` says when a `Prefer: wait` was honoured.
"""

from __future__ import annotations

import orjson
from flask import Response

from store.contract import FINAL_STATUSES
from store.records import PublicJob

FINAL = frozenset(s.value for s in FINAL_STATUSES)
RETRY_AFTER = {"train": "5", "predict": "1"}  # seconds; other job types "2"


def job_reply(public: PublicJob, *, created: bool, waited_s: int = 0, from_prefer: bool = False) -> Response:
    """The response for the public job object `public` (JobStore.public)."""
    final = public["status"] in FINAL
    status = 202 if created and not (waited_s > 0 and final) else 200
    response = Response(orjson.dumps(public), status=status, mimetype="application/json")
    if from_prefer:
        response.headers["Preference-Applied"] = f"wait={waited_s}"
    if status == 202:
        response.headers["Location"] = f"/v1/jobs/{public['id']}"
    if not final:
        response.headers["Retry-After"] = RETRY_AFTER.get(public["type"], "2")
    return response
