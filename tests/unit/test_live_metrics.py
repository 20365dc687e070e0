"""The live figures' arithmetic (store/live_metrics.py) and the traffic policy's choices (store/traffic.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from store import live_metrics
from store.live_metrics import VersionFigures
from store.rollouts import InvalidRollout, check_guard, check_steps, judge
from store.traffic import InvalidTraffic, TrafficPolicy, parse_policy


def test_a_summary_reads_rates_quantiles_class_shares_and_agreement() -> None:
    figures = VersionFigures()
    for ms in [3.0] * 98 + [40.0, 400.0]:
        figures.request(ms, error=False)
    figures.request(1.0, error=True)
    figures.predictions(labels=["a", "a", "b", "a"])
    figures.agreement(["a", "b", "a", "a"], ["a", "a", "a", "a"], regression=False)
    out = live_metrics.summary(dict(figures.counts))
    assert out["requests"] == 101 and out["errors"] == 1 and out["error_rate"] == pytest.approx(1 / 101)
    assert out["latency_ms"]["p50"] == 5 and out["latency_ms"]["p99"] == 50
    assert out["predictions"] == {"classes": {"a": 0.75, "b": 0.25}}
    assert out["shadow"] is None  # agreement is reported for a version that ran as a shadow
    shadow = VersionFigures()
    shadow.request(0.0, error=False, shadow=True)
    shadow.agreement(["a", "b", "a", "a"], ["a", "a", "a", "a"], regression=False)
    assert live_metrics.summary(dict(shadow.counts))["shadow"]["agreement"] == 0.75


def test_regression_figures_give_mean_std_and_quantiles_within_the_bins_precision() -> None:
    figures = VersionFigures()
    values = [float(v) for v in range(1, 101)]
    figures.predictions(values=values)
    out = live_metrics.summary(dict(figures.counts))["predictions"]
    assert out["mean"] == pytest.approx(50.5) and out["std"] == pytest.approx(28.866, rel=1e-3)
    assert out["quantiles"]["p50"] == pytest.approx(50, rel=0.05)
    assert live_metrics.bin_value(live_metrics.value_bin(-3.0)) == pytest.approx(-3.0, rel=0.05)


def test_a_steps_delta_with_nothing_new_has_no_distribution_and_no_division_by_zero() -> None:
    before = {"req": 5.0, "cls:a": 5.0, "rn": 0.0, "lat:5": 5.0, "lat_sum": 10.0}
    out = live_metrics.summary(live_metrics.minus(before, before))
    assert out["requests"] == 0 and out["predictions"] is None and out["latency_ms"]["p99"] is None


def test_weights_split_traffic_and_a_routing_key_always_lands_on_one_version() -> None:
    policy = TrafficPolicy({3: 90, 4: 10})
    shares = Counter(policy.choose() for _ in range(20_000))
    assert 0.08 < shares[4] / 20_000 < 0.12 and policy.primary == 3
    assert {policy.choose("user-7") for _ in range(50)} == {policy.choose("user-7")}
    by_key = Counter(policy.choose(f"user-{i}") for i in range(5000))
    assert 0.07 < by_key[4] / 5000 < 0.13


def test_bad_policies_name_their_field() -> None:
    with pytest.raises(InvalidTraffic) as caught:
        parse_policy(None, {"3": 90, "4": 20}, None)
    assert caught.value.errors[0]["loc"] == ["body", "versions"]
    with pytest.raises(InvalidTraffic) as caught:
        parse_policy(3, None, {"version": 3, "percent": 10})
    assert caught.value.errors[0]["loc"] == ["body", "shadow", "version"]
    assert parse_policy(None, {"3": 100, "4": 0}, None) == TrafficPolicy({3: 100})


def test_rollout_steps_and_guards_are_checked_and_judged() -> None:
    assert check_steps([5, 25, 100]) == [5, 25, 100]
    for steps in ([25, 5, 100], [5, 50], [], [0, 100], [True, 100]):
        with pytest.raises(InvalidRollout):
            check_steps(steps)
    with pytest.raises(InvalidRollout):
        check_guard({"max_errs": 1})
    guard = check_guard({"max_error_rate": 0.01, "max_p99_ms": 50, "min_agreement": 0.9})
    good = {"error_rate": 0.0, "latency_ms": {"p99": 20.0}, "shadow": {"agreement": 0.95}}
    assert judge(guard, good) is None
    assert judge(guard, {**good, "error_rate": 0.5})[0] == "max_error_rate"  # type: ignore[index]
    assert judge(guard, {**good, "latency_ms": {"p99": 100.0}})[0] == "max_p99_ms"  # type: ignore[index]
    assert judge(guard, {**good, "shadow": {"agreement": 0.5}})[0] == "min_agreement"  # type: ignore[index]
