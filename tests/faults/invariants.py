"""The invariants every fault scenario ends with, and its Jepsen-style one-line summary.

``check_tree_invariants(tree)`` reads every node of a tests.harness.tree.Tree (records are assumed to live at the
leaves) and returns a FaultSummary whose ``lost`` / ``duplicated`` / ``unexpected`` are empty when:

- the root's subtree totals equal, key by key and counter by counter, the sum of the leaves' own metric buckets,
  and its ``received`` total equals the cases counted in the leaves' own tables (else lost or duplicated);
- every outbox is fully acknowledged, and its head is the head its parent holds for it;
- no report was applied twice: received_reports has each (child, sequence) once and every parent's child figures
  are what the children's signed reports say (node.reporting.child_figures_differences);
- every report chain verifies (each parent's received reports per child, each node's own outbox from its last
  rebase) and every audit chain verifies;
- node.supervision.check_buckets is [] at every node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select, text

from federation import (
    COUNTER_FIELDS,
    REBASE_KIND,
    ChainHead,
    SupnetError,
    child_chains,
    outbox_table,
    received_reports,
    verify_history,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.app import Node
from node.audit_log import AuditLog
from node.reporting import child_figures_differences, node_outbox, subtree_buckets
from node.supervision import check_buckets
from tests.harness.tree import Tree

Key = tuple[str, str, str, str]  # day, basic_code, item_type_code, counter


@dataclass
class FaultSummary:
    """One run of a scenario: what it did and what the invariants found (empty sets: all good)."""

    operations: int = 0
    faults: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was lost, duplicated or unexpected."""
        return not (self.lost or self.duplicated or self.unexpected)

    def line(self, name: str = "") -> str:
        """``name: 412 operations, 3 faults injected, lost = ∅, duplicated = ∅, unexpected = ∅``."""

        def shown(items: list[str]) -> str:
            return "∅" if not items else "{" + "; ".join(items[:5]) + (" …}" if len(items) > 5 else "}")

        prefix = f"{name}: " if name else ""
        return (
            f"{prefix}{self.operations} operations, {self.faults} faults injected, lost = {shown(self.lost)}, "
            f"duplicated = {shown(self.duplicated)}, unexpected = {shown(self.unexpected)}"
        )


def _totals(node: Node) -> dict[Key, int]:
    with node.engine.connect() as conn:
        buckets = subtree_buckets(conn)
    totals: dict[Key, int] = {}
    for bucket in buckets:
        for name, value in zip(COUNTER_FIELDS, bucket.counters, strict=True):
            if value:
                totals[(bucket.day.isoformat(), bucket.basic_code, bucket.item_type_code, name)] = value
    return totals


def _own_cases(node: Node) -> int:
    with node.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM cases")).scalar_one())


def _check_totals(tree: Tree, root: str, summary: FaultSummary) -> None:
    leaves = [node_id for node_id in tree.leaves() if node_id != root]
    expected: dict[Key, int] = defaultdict(int)
    for leaf in leaves:
        for key, value in _totals(tree[leaf]).items():
            expected[key] += value
    got = _totals(tree[root])
    for key in sorted(set(expected) | set(got)):
        want, have = expected.get(key, 0), got.get(key, 0)
        if have < want:
            summary.lost.append(f"{root} {'/'.join(key)}: {have} < {want}")
        elif have > want:
            summary.duplicated.append(f"{root} {'/'.join(key)}: {have} > {want}")
    cases = sum(_own_cases(tree[leaf]) for leaf in leaves)
    received = sum(value for key, value in got.items() if key[3] == "received")
    if received < cases:
        summary.lost.append(f"{root} received {received} < {cases} cases at the leaves")
    elif received > cases:
        summary.duplicated.append(f"{root} received {received} > {cases} cases at the leaves")
    for node_id in tree.ids:
        if node_id not in leaves and _own_cases(tree[node_id]):
            summary.unexpected.append(f"{node_id} holds own cases: the invariants assume records at the leaves")


def _segments(rows: Iterable[tuple[int, bytes, str, bytes]]) -> list[tuple[ChainHead | None, list[SignedEnvelope]]]:
    """Own outbox rows split at each rebase marker: (the head it starts from, the envelopes after it)."""
    segments: list[tuple[ChainHead | None, list[SignedEnvelope]]] = [(None, [])]
    for sequence, digest, kind, envelope in rows:
        if kind == REBASE_KIND:
            segments.append((ChainHead(sequence, digest), []))
        else:
            segments[-1][1].append(SignedEnvelope.FromString(envelope))
    return segments


def _check_own_chain(tree: Tree, node_id: str, summary: FaultSummary) -> None:
    node = tree[node_id]
    t = outbox_table.c
    with node.engine.connect() as conn:
        pending = node_outbox(node).pending_count(conn)
        rows = [
            (int(r.sequence), bytes(r.digest), str(r.kind), bytes(r.envelope))
            for r in conn.execute(select(t.sequence, t.digest, t.kind, t.envelope).order_by(t.sequence))
        ]
    if pending:
        summary.unexpected.append(f"{node_id}: {pending} report(s) not acknowledged")
    for start, envelopes in _segments(rows):
        try:
            verify_history(envelopes, start, accept_first_at_any_sequence=start is None)
        except SupnetError as error:
            summary.unexpected.append(f"{node_id} own report chain: {error}")
    parent = tree.nodes[node_id].parent_id
    if rows and parent in tree.nodes:
        with tree[parent].engine.connect() as conn:
            held = conn.execute(
                select(child_chains.c.last_sequence, child_chains.c.last_digest).where(
                    child_chains.c.child_id == node_id
                )
            ).first()
        if held is None or (int(held[0]), bytes(held[1])) != (rows[-1][0], rows[-1][1]):
            summary.unexpected.append(f"{node_id}: outbox head #{rows[-1][0]} is not the head {parent} holds")


def _check_received(tree: Tree, node_id: str, summary: FaultSummary) -> None:
    node = tree[node_id]
    r = received_reports.c
    with node.engine.connect() as conn:
        twice = conn.execute(
            select(r.child_id, r.sequence).group_by(r.child_id, r.sequence).having(func.count() > 1)
        ).all()
        by_child: dict[str, list[SignedEnvelope]] = defaultdict(list)
        for child_id, raw in conn.execute(select(r.child_id, r.envelope).order_by(r.child_id, r.sequence)):
            by_child[child_id].append(SignedEnvelope.FromString(bytes(raw)))
    summary.duplicated.extend(f"{node_id} stored {child} #{sequence} twice" for child, sequence in twice)
    for child_id, envelopes in by_child.items():
        try:
            verify_history(envelopes)
        except SupnetError as error:
            summary.unexpected.append(f"{node_id}'s chain of {child_id}: {error}")
    figures = child_figures_differences(node)
    if not figures.consistent:
        summary.duplicated.extend(f"{node_id} child figures: {difference}" for difference in figures.differences[:5])


def check_tree_invariants(tree: Tree, *, operations: int = 0, faults: int = 0) -> FaultSummary:
    """Check every invariant of the module docstring on every node of ``tree``; the summary names each failure."""
    summary = FaultSummary(operations=operations, faults=faults)
    root = next(node_id for node_id in tree.ids if tree.nodes[node_id].parent_id not in tree.nodes)
    _check_totals(tree, root, summary)
    for node_id in tree.ids:
        node = tree[node_id]
        if tree.children_of(node_id):
            _check_received(tree, node_id, summary)
        if node_id != root:
            _check_own_chain(tree, node_id, summary)
        audit = AuditLog(node.engine).verify()
        if not audit.ok:
            summary.unexpected.append(f"{node_id} audit chain: {audit.kind} at #{audit.first_broken_seq}")
        summary.unexpected.extend(f"{node_id} buckets: {difference}" for difference in check_buckets(node)[:5])
    return summary
