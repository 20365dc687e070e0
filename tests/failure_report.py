"""Whether a test's call failed, for fixtures that add what they know to the failure (logs, records).

tests/conftest.py's `pytest_runtest_makereport` keeps each phase's report on the item (pytest's documented recipe);
plain module, since conftest modules are not importable by name.
"""

from __future__ import annotations

import pytest

PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def call_failed(request: pytest.FixtureRequest) -> bool:
    report = request.node.stash.get(PHASE_REPORTS, {}).get("call")
    return report is not None and report.failed
