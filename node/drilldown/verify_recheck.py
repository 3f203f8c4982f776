"""``verify_target``: a verification from a node, and a second look at the nodes that moved while it ran.

A live tree keeps changing while it is verified (at province scale a verification takes a minute or more and
rule scans raise cards every few seconds somewhere): a node whose own records differ from the latest report the
verifier followed, while its metric revision is past that report's ``up_to_revision``, holds changes it has not
reported yet. Such a node is verified again (its own subtree, from its newest report, authenticated down the
path as always) every RECHECK_PAUSE_SECONDS until it verifies or RECHECK_WAIT_SECONDS have passed; its findings
are replaced by the last look's, with a warning that says it moved. Many such nodes at once are first looked at by
one more whole verification. A node that differs without having moved
(records edited at rest, behind supnet's back) fails at once, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from federation import public_key_from_b64
from node.app import Node
from node.drilldown.client import DrilldownClient
from node.drilldown.verify import VERIFY_CONCURRENCY, Finding, Verifier, VerifyResult
from node.trust import node_trust

__all__ = ["RECHECK_WAIT_SECONDS", "recheck_moved", "verify_target"]

# How long a moved node is given to report what it holds (its report debounce, the send, the parent's store), and
# how often it is looked at meanwhile.
RECHECK_WAIT_SECONDS = 20.0
RECHECK_PAUSE_SECONDS = 1.0
# More moved nodes than this (a burst: every street's new day raised cards at its next scan) are looked at again
# by one more whole verification rather than one by one, each of which authenticates its path from the top.
RECHECK_ONE_BY_ONE = 50


def recheck_moved(
    verifier: Verifier,
    result: VerifyResult,
    *,
    wait: float = RECHECK_WAIT_SECONDS,
    pause: float = RECHECK_PAUSE_SECONDS,
    one_by_one: int = RECHECK_ONE_BY_ONE,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifyResult:
    """Verify again the nodes ``verifier`` found moved in ``result``; returns ``result`` with their new findings.

    More than ``one_by_one`` of them are first looked at again by one whole verification of the target.
    """
    moved = dict(verifier.moved)
    if not moved:
        return result
    deadline = time.monotonic() + wait
    if len(moved) > one_by_one:
        sleep(pause)
        second = verifier.verify(result.target_id)
        for node_id, sequence in moved.items():
            _replace(result, node_id, {node_id}, second, sequence)
        moved = {node_id: moved[node_id] for node_id in verifier.moved if node_id in moved}
        if not moved or len(moved) > one_by_one:
            return result
    last: dict[str, VerifyResult] = {}
    pending = sorted(moved)
    while pending and time.monotonic() < deadline:
        sleep(pause)
        still: list[str] = []
        for node_id in pending:
            again = verifier.verify(node_id)
            last[node_id] = again
            if not again.ok:
                still.append(node_id)
        pending = still
    for node_id, again in last.items():
        _replace(result, node_id, {node_id, *again.nodes_checked}, again, moved[node_id])
    return result


def _replace(result: VerifyResult, node_id: str, inside: set[str], again: VerifyResult, sequence: int) -> None:
    """Put the later look's findings about the nodes ``inside`` (node_id's) where the first look's were."""
    kept = [finding for finding in result.findings if finding.node_id not in inside]
    first = next((index for index, finding in enumerate(result.findings) if finding.node_id in inside), len(kept))
    note = Finding(
        node_id,
        "moved",
        True,
        f"changed after its report #{sequence} while it was verified; verified again from its newer reports",
        warning=True,
    )
    newer = [finding for finding in again.findings if finding.node_id in inside]
    position = min(first, len(kept))
    result.findings[:] = [*kept[:position], note, *newer, *kept[position:]]


def verify_target(
    node: Node,
    target_id: str,
    address: str | None = None,
    *,
    concurrency: int = VERIFY_CONCURRENCY,
    recheck_wait: float = RECHECK_WAIT_SECONDS,
) -> VerifyResult:
    """Verify target_id from this node (its local operator), through the node's running server.

    Nodes that moved while verified are looked at again for up to ``recheck_wait`` seconds (0: not at all).
    """
    keys = {
        child.id: public_key_from_b64(child.public_key) for child in node.config.federation.children if child.public_key
    }
    trust = node_trust(node)
    with DrilldownClient.for_node(node, address) as client:
        children = [child.id for child in node.config.federation.children]
        verifier = Verifier(client, keys, trust, children, concurrency=concurrency)
        result = verifier.verify(target_id)
        if recheck_wait > 0:
            recheck_moved(verifier, result, wait=recheck_wait)
        return result
