"""Waiting for a condition with a deadline, instead of sleeping for as long as it usually takes.

Deadlines are generous (test machines are shared and slow); a test never asserts how fast something happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout_s: float = 60.0, what: str = "condition", interval_s: float = 0.05
) -> T:
    """Poll `predicate` until it returns something truthy, and return that; AssertionError past the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s:.0f} s")
        time.sleep(interval_s)
