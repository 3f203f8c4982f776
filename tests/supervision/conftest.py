"""Tests of node.supervision: metrics and their consistency with the raw records, the rules (scan and
event-driven) and their alerts, complaints, evaluations, scores and the rule catalogue, on SQLite and PostgreSQL.

Folder fixture: ``node``, a node on ``db_url`` fed through the real importer (tests.harness.rules), running on
the module's settable ``clock`` fixture. Modules whose node is set up differently define their own ``node``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.app import Node
from tests.harness.clocks import Clock
from tests.harness.rules import make_node


@pytest.fixture
def node(tmp_path: Path, db_url: str, clock: Clock) -> Iterator[Node]:
    opened = make_node(tmp_path, db_url, clock)
    yield opened
    opened.close()
