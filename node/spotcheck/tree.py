"""The Merkle sum tree behind a bucket commitment: leaves, inner nodes with summed counts, paths and their check.

A leaf is the SHA-256 of a salt and the canonical bytes of one committed record (its digest binds the record and
so the flags counted for it); an inner node hashes both children's digests AND sums, and its sums are theirs
added, so the root binds which records were counted and how many of each flag. The tree is padded to a power of
two with empty nodes (zero digest, zero sums): its shape follows from the leaf count alone, so a verifier knows how
many leaves every sibling on a path must hold, and a node cannot claim more leaves under a sibling than the shape
allows. No database, no protobuf: pure functions over bytes and tuples.
"""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from operator import add

__all__ = [
    "EMPTY_DIGEST",
    "SUM_FIELDS",
    "PathNode",
    "SumTree",
    "TreeCheck",
    "expected_leaves",
    "inner_digest",
    "leaf_digest",
    "root_from_path",
]

# What every node sums: the number of leaves first, then the counted flags (the bucket counters they back).
SUM_FIELDS: tuple[str, ...] = (
    "leaves",
    "received",
    "completed",
    "completed_early",
    "completed_on_time",
    "completed_within_legal",
    "refused",
    "cases_returned",
)
Sums = tuple[int, ...]
ZERO_SUMS: Sums = (0,) * len(SUM_FIELDS)
EMPTY_DIGEST = bytes(32)
_SUMS_FORMAT = f">{len(SUM_FIELDS)}q"
# Both children's sums in one call: the same bytes as packing each with _SUMS_FORMAT and joining them.
_PAIR_FORMAT = f">{2 * len(SUM_FIELDS)}q"
_pack_pair = struct.Struct(_PAIR_FORMAT).pack
_LEAF_TAG = b"\x00supnet-spotcheck-leaf"
_NODE_TAG = b"\x01supnet-spotcheck-node"


def leaf_digest(salt: bytes, record_bytes: bytes) -> bytes:
    """The digest of one leaf: domain tag, salt length and salt, then the record's canonical bytes."""
    return hashlib.sha256(_LEAF_TAG + bytes([len(salt)]) + salt + record_bytes).digest()


def inner_digest(left: bytes, left_sums: Sums, right: bytes, right_sums: Sums) -> bytes:
    """The digest of an inner node over both children's digests and sums."""
    if len(left_sums) != len(SUM_FIELDS) or len(right_sums) != len(SUM_FIELDS):
        raise ValueError(f"a node sums one value per SUM_FIELDS entry ({len(SUM_FIELDS)})")
    return hashlib.sha256(_NODE_TAG + left + right + _pack_pair(*left_sums, *right_sums)).digest()


def _add(a: Sums, b: Sums) -> Sums:
    # Lengths are checked where sums come in (SumTree, root_from_path): map is several times faster than zip here.
    return tuple(map(operator.add, a, b))


def _depth(leaf_count: int) -> int:
    return max(leaf_count - 1, 0).bit_length()


def expected_leaves(leaf_count: int, level: int, position: int) -> int:
    """How many real leaves the node at ``position`` of ``level`` (0 = leaves) holds in a tree of ``leaf_count``."""
    width = 1 << level
    first = position * width
    return max(0, min(leaf_count, first + width) - first)


@dataclass(frozen=True, slots=True)
class PathNode:
    """A sibling on the way from a leaf up to the root: its digest and its sums."""

    digest: bytes
    sums: Sums


class SumTree:
    """A complete sum tree over (leaf digest, leaf sums) pairs, kept level by level for paths."""

    def __init__(self, leaves: Sequence[tuple[bytes, Sums]]) -> None:
        for _digest, sums in leaves:
            if len(sums) != len(SUM_FIELDS) or sums[0] != 1:
                raise ValueError("every leaf sums one leaf and one value per SUM_FIELDS entry")
        self.leaf_count = len(leaves)
        size = 1 << _depth(self.leaf_count)
        level: list[tuple[bytes, Sums]] = [*leaves, *[(EMPTY_DIGEST, ZERO_SUMS)] * (size - self.leaf_count)]
        self._levels = [level]
        while len(level) > 1:
            # A node over padding only is itself the empty node: a verifier knows it from the shape alone.
            # inner_digest inlined (sums already checked above): the tree is most of a report's commitment cost.
            level = [
                (sha256(_NODE_TAG + ld + rd + _pack_pair(*ls, *rs)).digest(), tuple(map(add, ls, rs)))
                if ls[0]
                else (EMPTY_DIGEST, ZERO_SUMS)
                for (ld, ls), (rd, rs) in zip(level[0::2], level[1::2], strict=True)
            ]
            self._levels.append(level)

    @property
    def root(self) -> bytes:
        """The root digest (the empty digest for a tree of no leaves)."""
        return self._levels[-1][0][0] if self.leaf_count else EMPTY_DIGEST

    @property
    def sums(self) -> Sums:
        """The root's sums."""
        return self._levels[-1][0][1] if self.leaf_count else ZERO_SUMS

    def path(self, index: int) -> list[PathNode]:
        """The siblings from leaf ``index`` up to (not including) the root."""
        if not 0 <= index < self.leaf_count:
            raise IndexError(f"leaf {index} is outside the tree of {self.leaf_count} leaves")
        path = []
        for level in self._levels[:-1]:
            digest, sums = level[index ^ 1]
            path.append(PathNode(digest, sums))
            index //= 2
        return path


@dataclass(frozen=True, slots=True)
class TreeCheck:
    """What a path check found: the root and root sums it leads to, or why it is not a valid path."""

    root: bytes
    sums: Sums
    problem: str = ""


def root_from_path(leaf_count: int, index: int, leaf: bytes, leaf_sums: Sums, path: Sequence[PathNode]) -> TreeCheck:
    """Walk from a leaf to the root, checking every sibling against the tree's shape; the root and its sums.

    A sibling must hold exactly the leaves the shape gives it, no flag sum above its leaf count and none below zero,
    and a sibling with no leaves must be the empty node: otherwise ``problem`` says what is wrong.
    """
    if not 0 <= index < leaf_count:
        return TreeCheck(EMPTY_DIGEST, ZERO_SUMS, f"leaf {index} is outside the committed {leaf_count} leaves")
    if len(path) != _depth(leaf_count):
        return TreeCheck(EMPTY_DIGEST, ZERO_SUMS, f"path of {len(path)} steps, the tree has {_depth(leaf_count)}")
    digest, sums, position = leaf, leaf_sums, index
    for level, sibling in enumerate(path):
        if len(sibling.sums) != len(SUM_FIELDS):
            return TreeCheck(EMPTY_DIGEST, ZERO_SUMS, f"sibling at level {level} has {len(sibling.sums)} sums")
        want = expected_leaves(leaf_count, level, position ^ 1)
        if sibling.sums[0] != want:
            return TreeCheck(
                EMPTY_DIGEST, ZERO_SUMS, f"sibling at level {level} claims {sibling.sums[0]} leaves, holds {want}"
            )
        if any(value < 0 or value > want for value in sibling.sums[1:]):
            return TreeCheck(EMPTY_DIGEST, ZERO_SUMS, f"sibling at level {level} claims counts beyond its leaves")
        if want == 0 and sibling.digest != EMPTY_DIGEST:
            return TreeCheck(EMPTY_DIGEST, ZERO_SUMS, f"sibling at level {level} should be the empty node")
        if position % 2 == 0:
            digest = inner_digest(digest, sums, sibling.digest, sibling.sums)
        else:
            digest = inner_digest(sibling.digest, sibling.sums, digest, sums)
        sums = _add(sums, sibling.sums)
        position //= 2
    return TreeCheck(digest, sums)
