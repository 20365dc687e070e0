"""The API's dataset checks at train submit agree with what training itself refuses."""

from __future__ import annotations

from api import train_checks
from training import data


def test_the_api_refuses_the_same_minimum_of_rows_as_training() -> None:
    assert train_checks.MIN_ROWS == data.MIN_ROWS
