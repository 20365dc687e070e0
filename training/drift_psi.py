"""The population stability index of live counts against a version's drift reference. Stdlib only (the API
imports it): the bins were already counted by the workers (training/drift_reference.py), so what is left is a
sum over at most a few dozen bins per feature.

    PSI = Σ_b (live_b − ref_b) · ln(live_b / ref_b)      over the bins' shares, each floored at EPSILON

A bin empty on one side would make the logarithm infinite; flooring its share at EPSILON is the usual remedy and
keeps a bin that is empty on both sides at exactly 0. Levels: none < 0.1 ≤ moderate < 0.25 ≤ major.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

EPSILON = 1e-4
MODERATE, MAJOR = 0.1, 0.25
LEVELS = ("none", "moderate", "major")
MIN_ROWS = 100  # below this many live rows, sampling noise alone can read as moderate drift


def psi(reference: Sequence[float], live: Sequence[float]) -> float | None:
    """PSI of two count vectors over the same bins; None when either side has no counts."""
    ref_total, live_total = float(sum(reference)), float(sum(live))
    if ref_total <= 0 or live_total <= 0:
        return None
    total = 0.0
    for r, a in zip(reference, live, strict=True):
        expected = max(r / ref_total, EPSILON)
        actual = max(a / live_total, EPSILON)
        total += (actual - expected) * math.log(actual / expected)
    return total


def level(value: float | None) -> str | None:
    if value is None:
        return None
    return "major" if value >= MAJOR else "moderate" if value >= MODERATE else "none"


def live_bins(counts: Mapping[str, int], prefix: str, size: int) -> list[int]:
    """The `size` bins of one feature ("<j>.") or of the predictions ("p.") from the summed hash fields."""
    bins = [0] * size
    for b in range(size):
        bins[b] = int(counts.get(f"{prefix}{b}", 0))
    return bins


def bin_labels(spec: Mapping[str, Any]) -> list[str]:
    """A name for each bin of a reference entry, for people: "< 2.5", "[2.5, 3.1)", "≥ 7", "Biscoe", "other"."""
    if spec["kind"] == "class":
        return [str(c) for c in spec["classes"]]
    if spec["kind"] == "category":
        return [*map(str, spec["categories"]), "other", "missing"]
    edges = [f"{e:.4g}" for e in spec["edges"]]
    if not edges:
        return ["all", "missing"]
    inner = [f"[{a}, {b})" for a, b in zip(edges, edges[1:], strict=False)]
    return [f"< {edges[0]}", *inner, f"≥ {edges[-1]}", "missing"]


def _entry(spec: Mapping[str, Any], live: list[int]) -> dict[str, Any]:
    value = psi(spec["counts"], live)
    return {
        "psi": None if value is None else round(value, 6),
        "level": level(value),
        "bins": bin_labels(spec),
        "reference": list(spec["counts"]),
        "live": live,
    }


def report(reference: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """PSI and level per feature and for the predictions; `level` overall is the worst of them."""
    rows = int(counts.get("n", 0))
    features = []
    for j, spec in enumerate(reference["features"]):
        entry = _entry(spec, live_bins(counts, f"{j}.", len(spec["counts"])))
        features.append({"name": spec["name"], "kind": spec["kind"], **entry})
    pred_spec = reference["predictions"]
    predictions = {"kind": pred_spec["kind"], **_entry(pred_spec, live_bins(counts, "p.", len(pred_spec["counts"])))}
    seen = [e["level"] for e in [*features, predictions] if e["level"] is not None]
    worst = max(seen, key=LEVELS.index) if seen else None
    return {
        "rows": rows,
        "reference_rows": int(reference.get("rows", 0)),
        "enough_rows": rows >= MIN_ROWS,
        "level": worst,
        "features": features,
        "predictions": predictions,
    }
