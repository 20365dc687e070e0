"""Search spaces become a fixed list of validated trials before anything is queued (stdlib only)."""

from __future__ import annotations

import pytest

from training.errors import InvalidParams
from training.search_space import check_metric, plan_trials


def test_a_grid_gives_one_trial_per_combination() -> None:
    trials = plan_trials(
        algorithm="mlp", params={"epochs": 3}, search={"lr": [0.01, 0.001], "hidden_layers": [[32], [64, 64]]}
    )
    assert [t["params"] for t in trials] == [
        {"epochs": 3, "lr": 0.01, "hidden_layers": [32]},
        {"epochs": 3, "lr": 0.01, "hidden_layers": [64, 64]},
        {"epochs": 3, "lr": 0.001, "hidden_layers": [32]},
        {"epochs": 3, "lr": 0.001, "hidden_layers": [64, 64]},
    ]
    assert {t["algorithm"] for t in trials} == {"mlp"}


def test_a_random_search_with_the_same_seed_draws_the_same_trials() -> None:
    search = {
        "strategy": "random",
        "trials": 6,
        "seed": 7,
        "space": {
            "n_estimators": {"int": [10, 500]},
            "learning_rate": {"log_uniform": [1e-3, 0.5]},
            "max_depth": [2, 3, 4],
        },
    }
    first = plan_trials(algorithm="gradient_boosting", params={}, search=search)
    again = plan_trials(algorithm="gradient_boosting", params={}, search=search)
    other = plan_trials(algorithm="gradient_boosting", params={}, search={**search, "seed": 8})
    assert first == again and first != other and len(first) == 6
    for trial in first:
        assert 10 <= trial["params"]["n_estimators"] <= 500
        assert 1e-3 <= trial["params"]["learning_rate"] <= 0.5
        assert trial["params"]["max_depth"] in (2, 3, 4)


def test_a_bad_value_anywhere_in_the_grid_is_refused_and_located() -> None:
    with pytest.raises(InvalidParams) as caught:
        plan_trials(algorithm="mlp", params={}, search={"lr": [0.1, 0.01, -1.0]})
    assert caught.value.errors[0]["loc"] == ["search", "lr", 2]
    assert "lr" in caught.value.message


def test_a_random_range_out_of_bounds_is_refused() -> None:
    with pytest.raises(InvalidParams) as caught:
        plan_trials(
            algorithm="random_forest",
            params={},
            search={"strategy": "random", "trials": 3, "space": {"n_estimators": {"int": [1, 10**6]}}},
        )
    assert caught.value.errors[0]["loc"] == ["search", "space", "n_estimators", "int", 1]


def test_unknown_parameters_and_too_many_trials_are_refused() -> None:
    with pytest.raises(InvalidParams, match="unknown parameter"):
        plan_trials(algorithm="ridge", params={}, search={"lr": [0.1]})
    with pytest.raises(InvalidParams, match="MLQ_MAX_SEARCH_TRIALS"):
        plan_trials(algorithm="ridge", params={}, search={"alpha": list(range(1, 12))}, max_trials=10)


@pytest.mark.parametrize("extra", [{"trials": 5}, {"seed": 3}, {"trials": 0}])
def test_a_grid_refuses_what_it_would_ignore(extra: dict[str, int]) -> None:
    key = next(iter(extra))
    with pytest.raises(InvalidParams, match=f'takes no "{key}"') as info:
        plan_trials(algorithm="ridge", params={}, search={"strategy": "grid", "space": {"alpha": [0.1, 1]}, **extra})
    assert info.value.errors[0]["loc"] == ["search", key]
    assert (
        len(plan_trials(algorithm="ridge", params={}, search={"strategy": "grid", "space": {"alpha": [0.1, 1]}})) == 2
    )


def test_several_algorithms_each_search_their_own_space() -> None:
    trials = plan_trials(
        algorithm=None,
        params=None,
        search=None,
        algorithms={"logistic_regression": {"C": [0.1, 1.0]}, "random_forest": {}},
    )
    assert [(t["algorithm"], t["params"]) for t in trials] == [
        ("logistic_regression", {"C": 0.1}),
        ("logistic_regression", {"C": 1.0}),
        ("random_forest", {}),
    ]


def test_metrics_have_a_direction_and_must_suit_the_task() -> None:
    assert check_metric("rmse", None, "regression") == ("rmse", "minimize")
    assert check_metric(None, None, None) == (None, None)
    with pytest.raises(InvalidParams):
        check_metric("rmse", None, "classification")
