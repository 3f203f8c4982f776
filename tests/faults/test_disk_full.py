"""Fault: a node's database is full (SQLite ``PRAGMA max_page_count`` on every connection of its engine).

An import into it fails with a clear, retryable error naming what failed and that the database is full, leaves no
corruption (``PRAGMA integrity_check``, the buckets recomputed from the records) and succeeds once space returns.
A parent whose database is full refuses a child's report with a retryable status and a clear message; the child
retries, and once space returns everything converges.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from federation import StorageFullError, UnavailableError, outbox_table, status_for
from node.app import Node
from node.ingest import Importer
from node.supervision import check_buckets, default_listeners
from node.synthetic import generate
from tests.faults.invariants import check_tree_invariants
from tests.harness.tree import Tree

IDS = ["gd", "gd.a", "gd.b"]


@contextmanager
def full_database(node: Node) -> Iterator[None]:
    """Every connection of the node's engine sees a database that cannot grow by one page; space returns after."""
    with node.engine.connect() as conn:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())

    def cap(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(node.engine, "connect", cap)
    node.engine.dispose()  # pooled connections reconnect, capped
    try:
        yield
    finally:
        event.remove(node.engine, "connect", cap)
        node.engine.dispose()


def _integrity(tree: Tree, node_id: str) -> str:
    with tree.nodes[node_id].db() as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _import(node: Node, paths: list[Path]) -> int:
    summary = Importer(node, listeners=default_listeners(node), batch_size=50).import_files(paths)
    assert summary.rejected == 0, summary.errors[:3]
    return summary.accepted


def _one_disk_full(base: Path, run: int) -> None:
    tree = Tree(base, IDS)
    try:
        operations, faults = 0, 0
        operations += tree.import_synthetic("gd.a", 6, seed=run, date_from=date(2025, 3, 3), date_to=date(2025, 3, 7))
        operations += tree.import_synthetic("gd.b", 6, seed=run + 30)
        tree.report_up()
        files = generate("gd.a", 40, 200 + run, base / "more", date_from=date(2025, 3, 10), date_to=date(2025, 3, 21))
        cases_before = tree.case_count(["gd.a"])

        # An import into a full database: a clear, retryable error naming the lines; nothing corrupt, nothing half.
        with full_database(tree["gd.a"]):
            faults += 1
            with pytest.raises(StorageFullError) as caught:
                _import(tree["gd.a"], list(files.paths))
        message = str(caught.value)
        assert "database or disk is full" in message and "lines" in message and "run the same import again" in message
        assert isinstance(caught.value, UnavailableError) and caught.value.code == "STORAGE_FULL"
        assert caught.value.__traceback__ is not None  # raised, not printed: the CLI shows it as one line
        assert _integrity(tree, "gd.a") == "ok"
        assert check_buckets(tree["gd.a"]) == []
        assert tree.case_count(["gd.a"]) >= cases_before
        # Space is back: the same import goes through (records stored before the failure are recognised).
        operations += _import(tree["gd.a"], list(files.paths))
        assert tree.case_count(["gd.a"]) > cases_before

        # A parent with a full database refuses the report retryably; the child keeps it and retries.
        with full_database(tree["gd"]):
            faults += 1
            refused = tree.sender("gd.a").report_now()
            assert refused.failed and "database or disk is full" in refused.error, refused
            with tree["gd.a"].engine.connect() as conn:
                last_error = conn.execute(
                    select(outbox_table.c.last_error).where(outbox_table.c.status == "pending")
                ).scalar_one()
            assert last_error.startswith("[STORAGE_FULL]") and "resend later" in last_error
            assert status_for(StorageFullError("")).name == "UNAVAILABLE"
            tree.clock.advance(2)
            assert tree.sender("gd.a").send_pending().failed  # still full: still refused, still kept
        assert _integrity(tree, "gd") == "ok"
        tree.clock.advance(2)
        delivered = tree.sender("gd.a").send_pending()
        assert not delivered.failed and delivered.acked >= 1 and delivered.pending == 0
        tree.report_up()
        operations += 4
        summary = check_tree_invariants(tree, operations=operations, faults=faults)
        print(summary.line(f"disk full, run {run}"))
        assert summary.ok, summary.line()
    finally:
        tree.close()


def test_full_database_refuses_clearly_and_recovers(tmp_path: Path, runs: int) -> None:
    for run in range(max(runs, 1)):  # --runs N by hand; once in CI
        _one_disk_full(tmp_path / f"run{run}", run)
