"""Tests of node.reporting: reports built, signed and delivered between real nodes over gRPC, their roll-up,
stale and missing children, the audit entries they leave, the receiver's group commit, and over 1,000 random
tampers, every one refused or caught by verify.

Folder fixtures: ``tree``, a running tests.harness.tree.Tree of the nodes ``tree_ids`` (gd ← gd.a, gd.b; a
module overrides ``tree_ids`` for another shape), closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.tree import Tree


@pytest.fixture
def tree_ids() -> list[str]:
    return ["gd", "gd.a", "gd.b"]


@pytest.fixture
def tree(tmp_path: Path, tree_ids: list[str]) -> Iterator[Tree]:
    built = Tree(tmp_path, tree_ids)
    yield built
    built.close()
