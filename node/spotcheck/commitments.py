"""The target's half: commitments built into each report, and the opening of sampled leaves on request.

``bucket_commitments`` runs inside the report builder's transaction (one read of the chunk's own records) and
returns one BucketCommitment per bucket with own records. ``open_leaves`` answers a spot-check request: it rebuilds
the bucket's tree from the records (or finds it among the trees opened lately) and, if its root is the signed one
the asker names, opens the asked leaves with their paths. When the records of that bucket changed after the report
was signed the tree no longer matches the signed root, and the node says so (InvalidStateError): the asker checks
the bucket again after the next report.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import date

from sqlalchemy import Connection

from federation import InvalidArgumentError, short_hex
from federation.proto.v1.spotcheck_pb2 import (
    BucketCommitment,
    LeafOpening,
    ProofNode,
    SpotCheckAnswer,
    SpotCheckRequest,
)
from node.errors import InvalidStateError
from node.spotcheck.records import BucketKey, Leaf, bucket_leaf_digests, bucket_leaves, leaf_sums, salt_key
from node.spotcheck.tree import SumTree, leaf_digest
from node.trust import SigningIdentity

__all__ = ["MAX_OPENINGS", "bucket_commitments", "leaf_tree", "open_leaves", "openings"]

# At most this many leaves opened by one request (a sample, not a download of the bucket).
MAX_OPENINGS = 200
ROOT_BYTES = 32
# Trees recently opened, by root: the root is the digest of the whole tree, so a tree found under the signed root
# IS the committed one (whatever changed in the store since) and later checks of the bucket need no rebuild.
_OPENED_TREES: OrderedDict[bytes, tuple[SumTree, list[Leaf]]] = OrderedDict()
_OPENED_TREES_MAX = 32
_opened_trees_lock = threading.Lock()


def leaf_tree(leaves: Sequence[Leaf]) -> SumTree:
    """The sum tree over a bucket's leaves, in their order."""
    return SumTree([(leaf_digest(leaf.salt, leaf.record_bytes), leaf_sums(leaf.record)) for leaf in leaves])


def bucket_commitments(
    conn: Connection, identity: SigningIdentity, keys: Iterable[BucketKey]
) -> list[BucketCommitment]:
    """One commitment per bucket key with own records, in key order (inside the report builder's transaction)."""
    # Digests and sums only: no Leaf objects (masked names, record bytes kept) that only an opening needs.
    leaves = bucket_leaf_digests(conn, keys, salt_key(identity))
    commitments = []
    for key in sorted(leaves):
        tree = SumTree(leaves[key])
        day, basic_code, item_type_code = key
        commitments.append(
            BucketCommitment(
                day=day.isoformat(),
                basic_code=basic_code,
                item_type_code=item_type_code,
                leaf_count=tree.leaf_count,
                root=tree.root,
            )
        )
    return commitments


def openings(tree: SumTree, leaves: Sequence[Leaf], indices: Iterable[int]) -> SpotCheckAnswer:
    """The answer opening ``indices`` of a tree built over ``leaves``."""
    answer = SpotCheckAnswer()
    for index in indices:
        leaf = leaves[index]
        answer.openings.append(
            LeafOpening(
                index=index,
                record=leaf.record,
                salt=leaf.salt,
                path=[ProofNode(digest=node.digest, sums=node.sums) for node in tree.path(index)],
                department=leaf.department,
                applicant_masked=leaf.applicant_masked,
            )
        )
    return answer


def open_leaves(conn: Connection, identity: SigningIdentity, request: SpotCheckRequest) -> SpotCheckAnswer:
    """Open the requested leaves of the bucket tree whose root the asker read from a report this node signed.

    The tree is rebuilt from the records (or found among the trees opened lately) and opened only if its root is
    the asked one: the asker checks every path against that signed root, so nothing else needs to be looked up
    (a report since pruned from this node's outbox, but held by its parent, can still be checked).
    """
    indices = list(request.leaf_indices)
    if not indices:
        raise InvalidArgumentError("a spot check names at least one leaf to open (leaf_indices)")
    if len(indices) > MAX_OPENINGS:
        raise InvalidArgumentError(f"a spot check opens at most {MAX_OPENINGS} leaves, {len(indices)} were asked")
    if len(set(indices)) != len(indices):
        raise InvalidArgumentError("leaf_indices names a leaf twice")
    if len(request.root) != ROOT_BYTES:
        raise InvalidArgumentError(f"a spot check names the signed root it checks ({ROOT_BYTES} bytes)")
    try:
        key: BucketKey = (date.fromisoformat(request.day), request.basic_code, request.item_type_code)
    except ValueError as exc:
        raise InvalidArgumentError(f"spot-check day {request.day!r} is not YYYY-MM-DD") from exc
    root = bytes(request.root)
    with _opened_trees_lock:
        cached = _OPENED_TREES.get(root)
        if cached is not None:
            _OPENED_TREES.move_to_end(root)
    if cached is None:
        leaves = bucket_leaves(conn, [key], salt_key(identity)).get(key, [])
        tree = leaf_tree(leaves)
        if tree.root != root:
            raise InvalidStateError(
                f"the records of bucket ({request.day}, {request.basic_code}, {request.item_type_code}) are not "
                f"those committed under root {short_hex(root)} (report #{request.report_sequence}): they changed "
                "after it was signed, or that root was never this node's; check the bucket of a later report"
            )
        cached = (tree, leaves)
        with _opened_trees_lock:
            _OPENED_TREES[root] = cached
            while len(_OPENED_TREES) > _OPENED_TREES_MAX:
                _OPENED_TREES.popitem(last=False)
    tree, leaves = cached
    outside = [index for index in indices if index >= tree.leaf_count]
    if outside:
        raise InvalidArgumentError(f"leaves {outside} are outside the {tree.leaf_count} committed leaves")
    return openings(tree, leaves, indices)
