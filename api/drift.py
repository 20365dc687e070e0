"""Drift of a model version: GET /v1/models/{name}/versions/{version}/drift?window=1h.

The workers count live inputs and predictions into the bins of the version's `drift_reference` (its manifest,
written at training time); this route adds up the window's buckets (store/drift_counts.py) and gives the
population stability index per feature and for the predictions (training/drift_psi.py). No model is loaded and
nothing but the manifest and a few hashes is read: the API stays torch- and numpy-free.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.model_routes import known_name
from api.problems import NoDriftReference
from api.schemas import Parameters, Problem, VersionPath
from api.services import services, tenant
from store.drift_counts import WINDOW_HELP, DriftCounts, parse_window
from training.drift_psi import MAJOR, MIN_ROWS, MODERATE, report

bp = APIBlueprint(
    "drift",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="models")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 409: Problem, 422: Problem, 503: Problem},
)


# Exactly the windows parse_window takes (10m..1440m, 1h..24h, 1d), so the OpenAPI document says what is valid.
WINDOW_PATTERN = r"^((1[0-9]|[2-9][0-9]|[1-9][0-9]{2}|1[0-3][0-9]{2}|14[0-3][0-9]|1440)m|([1-9]|1[0-9]|2[0-4])h|1d)$"


class DriftQuery(Parameters):
    window: str = Field("1h", pattern=WINDOW_PATTERN, description=f"how far back live counts are read: {WINDOW_HELP}")

    @field_validator("window", mode="before")
    @classmethod
    def _known_window(cls, value: object) -> object:
        if isinstance(value, str):
            parse_window(value)  # before the pattern: its message says what a window looks like (a 422)
        return value


class DriftEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    psi: float | None
    level: str | None
    bins: list[str]
    reference: list[int]
    live: list[int]


class Drift(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    version: int
    window: str
    window_s: int
    rows: int
    level: str | None
    features: list[DriftEntry]
    predictions: DriftEntry


def drift_report(name: str, version: int, window_s: int) -> dict[str, Any]:
    """The report of one version of the current tenant's model over the last `window_s` seconds."""
    manifest = services().registry.manifest(tenant(), name, version)
    reference = manifest.get("drift_reference")
    if not isinstance(reference, dict):
        raise NoDriftReference(
            f"version {version} of {name!r} has no drift reference: it was registered before mlqueue stored "
            "reference statistics at training time (or was not trained by mlqueue), so live data has nothing to "
            "be compared with; train a new version (or optimize this one after retraining) to get drift"
        )
    counts = DriftCounts(services().redis).read(tenant(), name, version, window_s)
    return report(reference, counts)


@bp.get("/<name>/versions/<int:version>/drift", responses={200: Drift})
def get_drift(path: VersionPath, query: DriftQuery) -> Response:
    """Population stability index (PSI) of live inputs and predictions against the training reference, per
    feature and for the predictions, with a level: none < 0.1 ≤ moderate < 0.25 ≤ major."""
    name = known_name(path.name)
    window_s = parse_window(query.window)
    body = drift_report(name, path.version, window_s)
    thresholds = {"moderate": MODERATE, "major": MAJOR, "min_rows": MIN_ROWS}
    return jsonify(
        {
            "model": name,
            "version": path.version,
            "window": query.window,
            "window_s": window_s,
            "thresholds": thresholds,
            **body,
        }
    )
