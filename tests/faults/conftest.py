"""Fault scenarios (issue 16's harness): every test here is slow; ``--runs N`` repeats each scenario N times."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runs", type=int, default=1, help="repetitions of each fault scenario (by hand: more)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def runs(request: pytest.FixtureRequest) -> int:
    """How many times a scenario repeats (``--runs``; 1 in CI)."""
    return max(int(request.config.getoption("--runs", default=1)), 1)
