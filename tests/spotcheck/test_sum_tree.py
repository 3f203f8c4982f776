"""The sum tree alone: every path of trees of 1..33 leaves leads to the root with the root's sums; a sibling that
lies about its leaves or counts, or a padding node that is not empty, is named; detection probabilities."""

from __future__ import annotations

import hashlib
import math

import pytest

from node.spotcheck import (
    EMPTY_DIGEST,
    SUM_FIELDS,
    PathNode,
    SumTree,
    detection_probability,
    leaf_digest,
    root_from_path,
)


def _leaves(n: int) -> list[tuple[bytes, tuple[int, ...]]]:
    leaves = []
    for i in range(n):
        flags = tuple((i >> bit) & 1 for bit in range(len(SUM_FIELDS) - 1))
        leaves.append((leaf_digest(bytes([i % 256]) * 16, hashlib.sha256(str(i).encode()).digest()), (1, *flags)))
    return leaves


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_path_leads_to_the_root_with_its_sums(n: int) -> None:
    leaves = _leaves(n)
    tree = SumTree(leaves)
    expected = tuple(sum(column) for column in zip(*(sums for _d, sums in leaves), strict=True))
    assert tree.sums == expected and tree.sums[0] == n
    for index, (digest, sums) in enumerate(leaves):
        walked = root_from_path(n, index, digest, sums, tree.path(index))
        assert walked.problem == "" and walked.root == tree.root and walked.sums == expected


def test_lies_in_a_path_are_named() -> None:
    leaves = _leaves(5)
    tree = SumTree(leaves)
    digest, sums = leaves[0]
    path = tree.path(0)
    inflated = [PathNode(path[0].digest, (path[0].sums[0], path[0].sums[1] + 1, *path[0].sums[2:])), *path[1:]]
    assert "beyond its leaves" in root_from_path(5, 0, digest, sums, inflated).problem
    more = [path[0], PathNode(path[1].digest, (3, *path[1].sums[1:])), *path[2:]]
    assert "claims 3 leaves, holds 2" in root_from_path(5, 0, digest, sums, more).problem
    # Leaf 4's path has padding as siblings: they must be the empty node.
    last_path = tree.path(4)
    assert last_path[0].digest == EMPTY_DIGEST and last_path[1].digest == EMPTY_DIGEST
    forged = [PathNode(b"\x01" * 32, last_path[0].sums), *last_path[1:]]
    assert "empty node" in root_from_path(5, 4, *leaves[4], forged).problem
    assert "outside" in root_from_path(5, 5, digest, sums, path).problem
    changed = root_from_path(5, 0, leaf_digest(b"x" * 16, b"other"), sums, path)
    assert changed.problem == "" and changed.root != tree.root


def test_detection_probability_is_one_minus_the_hypergeometric_miss() -> None:
    assert detection_probability(200, 10, 30) == pytest.approx(1 - math.comb(190, 30) / math.comb(200, 30))
    assert detection_probability(100, 1, 100) == 1.0
    assert detection_probability(100, 0, 30) == 0.0
    assert detection_probability(10, 1, 1) == pytest.approx(0.1)
