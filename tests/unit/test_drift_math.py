"""The drift maths: reference bins, live binning and PSI, each checked against a plain recomputation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from store import keys
from store.drift_counts import BUCKET_S, TTL_S, DriftCounts, parse_window
from training.drift_psi import EPSILON, level, psi, report
from training.drift_reference import DriftBinner, bin_numbers, decile_edges, reference


def _psi_by_hand(ref: list[int], live: list[int]) -> float:
    r = np.maximum(np.asarray(ref, float) / sum(ref), EPSILON)
    a = np.maximum(np.asarray(live, float) / sum(live), EPSILON)
    return float(np.sum((a - r) * np.log(a / r)))


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n) + shift,
            "b": rng.exponential(size=n),
            "flag": rng.integers(0, 2, size=n).astype(float),
            "site": pd.Series(rng.choice(["north", "south", "east"], size=n, p=[0.5, 0.3, 0.2]), dtype=object),
        }
    )


DTYPES = {"a": "number", "b": "number", "flag": "number", "site": "category"}


def _reference(n: int = 5000) -> dict[str, Any]:
    frame = _frame(n, seed=0)
    scores = np.random.default_rng(1).dirichlet([1, 1, 1], size=800)
    return reference(frame, DTYPES, scores, ["x", "y", "z"])


def test_psi_matches_a_recomputation_and_is_zero_for_equal_shares() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        ref = rng.integers(0, 50, size=11).tolist()
        live = rng.integers(0, 50, size=11).tolist()
        assert psi(ref, live) == pytest.approx(_psi_by_hand(ref, live), rel=1e-12)
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-15)
    assert psi([0, 0], [1, 2]) is None and psi([1, 2], [0, 0]) is None


def test_levels_follow_the_thresholds() -> None:
    assert [level(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0, None)] == [
        "none",
        "none",
        "moderate",
        "moderate",
        "major",
        "major",
        None,
    ]


def test_number_bins_are_the_deciles_with_open_ends_and_a_missing_bin() -> None:
    values = np.random.default_rng(0).normal(size=10_000)
    edges = decile_edges(values)
    assert len(edges) == 9 and edges == sorted(edges)
    bins = bin_numbers(np.append(values, [np.nan, -1e9, 1e9]), np.asarray(edges))
    by_hand = [sum(1 for e in edges if e <= v) for v in values]  # the count of cut points at or below a value
    assert bins[:-3].tolist() == by_hand
    assert bins[-3:].tolist() == [10, 0, 9]  # missing; far below → first bin; far above → last bin
    shares = np.bincount(bins[:-3]) / len(values)
    assert np.allclose(shares, 0.1, atol=0.01)


def test_a_binary_feature_keeps_both_values_apart() -> None:
    edges = decile_edges(np.array([0.0] * 70 + [1.0] * 30))
    counts = np.bincount(bin_numbers(np.array([0.0] * 70 + [1.0] * 30), np.asarray(edges)))
    assert sorted(c for c in counts.tolist() if c) == [30, 70]


def test_the_reference_counts_every_training_row_once() -> None:
    ref = _reference()
    assert ref["rows"] == 5000
    by_name = {f["name"]: f for f in ref["features"]}
    assert [f["name"] for f in ref["features"]] == list(DTYPES)
    for spec in ref["features"]:
        assert sum(spec["counts"]) == 5000
    assert by_name["site"]["categories"] == ["north", "south", "east"]  # most frequent first
    assert by_name["site"]["counts"][-2:] == [0, 0]  # other, missing
    assert sum(ref["predictions"]["counts"]) == 800 and ref["predictions"]["classes"] == ["x", "y", "z"]


def test_the_binner_counts_rows_like_the_reference_binned_them() -> None:
    ref = _reference()
    features = list(DTYPES)
    binner = DriftBinner(ref, features)
    frame = _frame(300, seed=5)
    rows = frame.to_dict("records")
    rows[0]["a"], rows[1]["site"], rows[2]["site"] = None, None, "west"  # missing; missing; never seen → other
    scores = np.random.default_rng(2).dirichlet([1, 1, 1], size=300)
    fields = binner.count(rows, scores)
    as_lists = binner.count([[r[f] for f in features] for r in rows], scores)
    assert fields == as_lists  # objects and arrays in feature order bin alike
    assert fields["n"] == 300
    for j, spec in enumerate(ref["features"]):
        counts = [fields.get(f"{j}.{b}", 0) for b in range(len(spec["counts"]))]
        assert sum(counts) == 300
        if spec["kind"] == "number":
            edges = spec["edges"]
            expected = [0] * (len(edges) + 2)
            for r in rows:
                v = r[spec["name"]]
                expected[len(edges) + 1 if v is None else sum(1 for e in edges if e <= v)] += 1
            assert counts == expected
    site = ref["features"][3]
    assert fields["3.3"] == 1 and fields["3.4"] == 1  # "west" → other, None → missing
    assert sum(site["counts"]) == 5000
    assert [fields.get(f"p.{b}", 0) for b in range(3)] == np.bincount(scores.argmax(axis=1), minlength=3).tolist()


def test_rows_like_the_training_data_read_none_and_a_shifted_feature_reads_major() -> None:
    ref = _reference()
    binner = DriftBinner(ref, list(DTYPES))
    scores = np.random.default_rng(2).dirichlet([1, 1, 1], size=1000)
    same = report(ref, binner.count(_frame(1000, seed=9).to_dict("records"), scores))
    assert all(f["level"] == "none" for f in same["features"]), same["features"]
    shifted = report(ref, binner.count(_frame(1000, seed=9, shift=2.0).to_dict("records"), scores))
    assert {f["name"]: f["level"] for f in shifted["features"]} == {
        "a": "major",
        "b": "none",
        "flag": "none",
        "site": "none",
    }
    a = shifted["features"][0]
    assert a["psi"] == pytest.approx(_psi_by_hand(a["reference"], a["live"]), rel=1e-5)
    assert shifted["level"] == "major" and shifted["rows"] == 1000 and shifted["enough_rows"]


def test_a_regression_reference_bins_the_predicted_values() -> None:
    frame = _frame(1000, seed=0)
    ref = reference(frame, DTYPES, np.linspace(0, 1, 500), None)
    assert ref["predictions"]["kind"] == "number" and sum(ref["predictions"]["counts"]) == 500
    fields = DriftBinner(ref, list(DTYPES)).count(frame.to_dict("records")[:10], np.array([-5.0] * 10))
    assert fields["p.0"] == 10


def test_windows_parse_and_refuse_what_they_cannot_read() -> None:
    assert [parse_window(w) for w in ("10m", "1h", "6h", "24h", "1d")] == [600, 3600, 21600, 86400, 86400]
    for bad in ("5m", "25h", "2d", "1y", "", "h", "-1h", "01h"):
        with pytest.raises(ValueError, match="10m"):
            parse_window(bad)


def test_counts_add_up_over_the_window_and_expire(redis_client: redis.Redis) -> None:
    counts = DriftCounts(redis_client)
    now = 1_800_000_000.0
    for minutes_ago in (0, 15, 50, 70):  # the 70-minute-old bucket is outside a 1 h window
        with redis_client.pipeline(transaction=False) as pipe:
            DriftCounts.add_in(pipe, "acme", "m", 2, {"n": 10, "0.1": 4}, now=now - minutes_ago * 60)
            pipe.execute()
    assert counts.read("acme", "m", 2, 3600, now=now) == {"n": 30, "0.1": 12}
    assert counts.read("acme", "m", 2, 24 * 3600, now=now) == {"n": 40, "0.1": 16}
    assert counts.read("other", "m", 2, 3600, now=now) == {}
    key = keys.drift_counts("acme", "m", 2, int(now // BUCKET_S))
    assert key.startswith("mlq:t:acme:") and 0 < redis_client.ttl(key) <= TTL_S
    assert counts.active(3600, now=now) == [("acme", "m", 2)]
    assert math.isclose(float(redis_client.zscore(keys.DRIFT_ACTIVE, '["acme","m",2]') or 0), now)


def test_the_worker_tally_counts_batches_into_redis_and_never_fails_one(redis_client: redis.Redis) -> None:
    from types import SimpleNamespace

    from worker.drift_tally import DriftTally

    ref = _reference()
    served = SimpleNamespace(
        tenant="acme", name="m", version=3, features=list(DTYPES), manifest={"drift_reference": ref}
    )
    old = SimpleNamespace(tenant="acme", name="m", version=1, features=list(DTYPES), manifest={})
    tally = DriftTally(redis_client)
    rows = _frame(40, seed=4).to_dict("records")
    scores = np.random.default_rng(0).dirichlet([1, 1, 1], size=40)
    for _ in range(2):  # two forward passes of one batch
        tally.observe(served, rows, scores)
    tally.observe(old, rows, scores)  # no reference: skipped
    tally.observe(SimpleNamespace(), rows, scores)  # not a predictor at all: skipped, no exception
    tally.observe(served, [{"a": "text"}], scores[:1])  # rows it cannot bin: skipped, no exception
    tally.flush()
    counts = DriftCounts(redis_client)
    assert counts.read("acme", "m", 3, 600)["n"] == 80
    tally.observe(served, rows, scores)  # the version is still counted after a batch it could not bin
    tally.flush()
    assert counts.read("acme", "m", 3, 600)["n"] == 120
    assert counts.read("acme", "m", 1, 600) == {}
    off = DriftTally(redis_client, enabled=False)
    off.observe(served, rows, scores)
    assert off.pending == {}


def test_the_routes_window_pattern_takes_exactly_the_windows_the_counts_can_read() -> None:
    import re

    from api.drift import WINDOW_PATTERN

    for text in [f"{n}{unit}" for n in range(0, 2000) for unit in "mhd"] + ["", "1h ", "01h", "1.5h"]:
        try:
            parse_window(text)
            valid = True
        except ValueError:
            valid = False
        assert valid == bool(re.fullmatch(WINDOW_PATTERN, text)), text
