"""The fault harness (issue 16): real node processes and in-process trees under kill -9, partitions, outages,
clock skew, restored backups and full disks. Every test here is slow; CI runs a small size, ``--runs N`` a big one.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this folder is slow."""
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def runs(request: pytest.FixtureRequest) -> int:
    """The --runs option (0 when not given: each harness then uses its CI size)."""
    return int(request.config.getoption("--runs"))
