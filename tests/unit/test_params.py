"""The parameter schemas: the one place that says what each algorithm accepts."""

from __future__ import annotations

from typing import Any

import pytest

from training.errors import InvalidParams, UnknownAlgorithm
from training.params import ALGORITHM_NAMES, ALGORITHM_TASKS, PARAM_SCHEMAS, validate_params


def test_defaults_are_filled_in_and_given_values_kept() -> None:
    params = validate_params("mlp", {"epochs": 3, "hidden_layers": [8]})
    assert params["epochs"] == 3
    assert params["hidden_layers"] == [8]
    assert params["optimizer"] == "adam"
    assert params["lr"] == pytest.approx(1e-3)


def test_list_defaults_are_copies_so_callers_cannot_change_the_schema() -> None:
    validate_params("mlp", {})["hidden_layers"].append(999)
    assert PARAM_SCHEMAS["mlp"]["hidden_layers"].default == [64, 64]


def test_unknown_algorithm_is_refused_with_the_list_of_valid_ones() -> None:
    with pytest.raises(UnknownAlgorithm) as err:
        validate_params("xgboost", {})
    for name in ALGORITHM_NAMES:
        assert name in err.value.message


def test_every_problem_is_reported_at_once_each_naming_the_parameter() -> None:
    with pytest.raises(InvalidParams) as err:
        validate_params("mlp", {"epochs": 0, "colour": "red", "optimizer": "rmsprop", "hidden_layers": [0]})
    locs = {tuple(e["loc"]) for e in err.value.errors}
    assert locs == {("params", "epochs"), ("params", "colour"), ("params", "optimizer"), ("params", "hidden_layers")}
    assert ">= 1" in err.value.message and "rmsprop" in err.value.message


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"epochs": 2.5}, "integer"),
        ({"epochs": True}, "integer"),
        ({"epochs": "10"}, "integer"),
        ({"lr": 0}, "> 0"),
        ({"lr": float("inf")}, "finite"),
        ({"batch_size": 10**9}, "<= 65536"),
        ({"hidden_layers": [64] * 9}, "1 to 8 items"),
        ({"hidden_layers": []}, "1 to 8 items"),
        ({"weight_decay": None}, "not null"),
    ],
)
def test_wrong_types_and_out_of_range_values_are_refused(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidParams) as err:
        validate_params("mlp", params)
    assert fragment in err.value.message


def test_nullable_parameters_accept_null() -> None:
    assert validate_params("random_forest", {"max_depth": None})["max_depth"] is None
    assert validate_params("logistic_regression", {"class_weight": None})["class_weight"] is None


def test_an_algorithm_that_cannot_do_the_task_says_which_can() -> None:
    with pytest.raises(InvalidParams) as err:
        validate_params("linear_regression", {}, task="classification")
    assert "logistic_regression" in err.value.message


def test_every_algorithm_names_its_tasks() -> None:
    assert set(ALGORITHM_TASKS) == set(PARAM_SCHEMAS)


def test_an_unknown_key_is_named_in_the_message_even_when_an_allowed_name_contains_it() -> None:
    with pytest.raises(InvalidParams) as info:
        validate_params("mlp", {"epoch": 3}, "classification")
    assert info.value.message.startswith("invalid params: epoch: unknown parameter for mlp")
