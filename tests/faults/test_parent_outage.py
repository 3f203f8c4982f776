"""Fault: a city (the leaves' parent) is down for 24 hours of node time while its districts keep importing.

The tree's clock advances hour by hour; each leaf imports a chunk now and then and its sender tries every hour.
The outbox fills up to its (small) limit, the overflow raises the operator notice, and nothing is dropped: the
buckets keep the data. When the city is back the backlog drains in sequence order and the province converges.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import select

from federation import OUTBOX_PENDING, outbox_table, received_reports
from node.notify import NoticeKind
from node.reporting import node_outbox, outbox_overflow_count
from node.store import OperatorNotice
from tests.faults.invariants import check_tree_invariants
from tests.harness.tree import Tree

IDS = ["gd", "gd.a", "gd.a.x", "gd.a.y", "gd.b"]
DOWN = "gd.a"
BUFFERING = ["gd.a.x", "gd.a.y"]
OUTBOX_LIMIT = 4
HOURS = 24
CHUNK_EVERY_HOURS = 4
CHUNK_CASES = 4
# One working day per chunk: case numbers carry their day, so every chunk holds new cases.
CHUNK_DAYS = [date(2025, 3, 10) + timedelta(days=offset) for offset in (0, 1, 2, 3, 4, 7, 8, 9, 10, 11)]


def _pending(tree: Tree, node_id: str) -> int:
    node = tree[node_id]
    with node.engine.connect() as conn:
        return node_outbox(node).pending_count(conn)


def _drain(tree: Tree, node_id: str, attempts: int = 50) -> None:
    """Send until the outbox is empty (the first retry after the outage may still be backing off)."""
    for _ in range(attempts):
        tree.sender(node_id).send_pending()
        if not _pending(tree, node_id):
            return
        tree.clock.advance(2)
    raise AssertionError(f"{node_id}: {_pending(tree, node_id)} reports still pending")


def _one_outage(base: Path, run: int) -> None:
    tree = Tree(base, IDS, federation={"outbox_max_reports": OUTBOX_LIMIT})
    try:
        operations = faults = 0
        for number, leaf in enumerate(["gd.a.x", "gd.a.y", "gd.b"]):
            operations += tree.import_synthetic(
                leaf, 6, seed=run * 10 + number, date_from=date(2025, 3, 3), date_to=date(2025, 3, 7)
            )
        tree.report_up()
        port = tree.nodes[DOWN].port
        tree.stop_server(DOWN)
        faults += 1
        refused_before = {leaf: outbox_overflow_count(tree[leaf]) for leaf in BUFFERING}
        chunk = 0
        for hour in range(1, HOURS + 1):
            tree.clock.advance(3600)
            if hour % CHUNK_EVERY_HOURS == 0:
                for number, leaf in enumerate(BUFFERING):
                    day = CHUNK_DAYS[chunk]
                    operations += tree.import_synthetic(
                        leaf, CHUNK_CASES, seed=1000 * run + 10 * chunk + number, date_from=day, date_to=day
                    )
                chunk += 1
            for leaf in BUFFERING:
                result = tree.sender(leaf).report_now()
                operations += 1
                assert result.failed and "UNAVAILABLE" in result.error
            # The other city is up all along.
            operations += tree.sender("gd.b").report_now().acked
        for leaf in BUFFERING:
            # Bounded: the outbox stops at its limit, the overflow is counted and told to the operators ...
            assert _pending(tree, leaf) == OUTBOX_LIMIT
            assert outbox_overflow_count(tree[leaf]) > refused_before[leaf]
            with tree[leaf].engine.connect() as conn:
                notices = conn.execute(
                    select(OperatorNotice.about).where(OperatorNotice.kind == NoticeKind.OUTBOX_OVERFLOW.value)
                ).all()
            assert [row.about for row in notices] == [DOWN]
        # ... and nothing is dropped: the province still lacks the buffered chunks, the leaves hold them.
        tree.start_server(DOWN, port)
        for leaf in BUFFERING:
            _drain(tree, leaf)
            # The backlog arrived in sequence order: one unbroken run of sequences, stored in that order.
            with tree[DOWN].engine.connect() as conn:
                stored = conn.execute(
                    select(received_reports.c.sequence)
                    .where(received_reports.c.child_id == leaf)
                    .order_by(received_reports.c.received_at, received_reports.c.sequence)
                ).scalars()
                sequences = list(stored)
            assert sequences == list(range(1, len(sequences) + 1))
            with tree[leaf].engine.connect() as conn:
                assert not conn.execute(select(outbox_table).where(outbox_table.c.status == OUTBOX_PENDING)).first()
        # The refused reports' data goes up with the next one: the leaves report once more, then the cities.
        tree.report_up()
        summary = check_tree_invariants(tree, operations=operations, faults=faults)
        print(summary.line(f"parent outage {HOURS} h, run {run}"))
        assert summary.ok, summary.line()
    finally:
        tree.close()


def test_parent_down_for_a_day_buffers_bounded_and_converges(tmp_path: Path, runs: int) -> None:
    for run in range(max(runs, 1)):  # --runs N by hand; once in CI
        _one_outage(tmp_path / f"run{run}", run)
