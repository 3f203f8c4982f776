"""Fault: a district restored from an old backup rewinds its report chain.

Its parent refuses the rewritten history loudly (HISTORY_REWRITTEN over gRPC, an audit entry, an operator notice
naming the child and the recovery) and the district's own operators are told the command that recovers:
``supnet reports resync``, run here through the real CLI. It continues the chain from the parent's head and sends
a FULL report, so the province converges to what the restored district holds; the operator then re-imports the
records lost with the backup and the province converges to everything. Nothing is accepted silently or lost.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import date
from pathlib import Path

import grpc
import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from federation import child_chains, outbox_table
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from node.app import open_node
from node.audit_log import AuditLog
from node.cli import reports_cmd
from node.ingest import Importer
from node.notify import NoticeKind
from node.reporting import RESYNC_ACTION, ReportSender
from node.store import Notification, OperatorNotice
from node.supervision import default_listeners
from node.synthetic import generate
from tests.faults.invariants import check_tree_invariants
from tests.harness.tree import Tree, TreeClock

IDS = ["gd", "gd.a", "gd.a.x", "gd.b"]
RESTORED = "gd.a.x"
PARENT = "gd.a"


def _backup(tree: Tree, node_id: str, target: Path) -> None:
    """An online backup of the node's SQLite file (sqlite3's backup API, as an operator's tool would take it)."""
    source = sqlite3.connect(tree.nodes[node_id].data_dir / "node.db")
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()


def _restore(tree: Tree, node_id: str, backup: Path) -> None:
    """Stop the node, put the backup in place of its database, start it again (new node, new sender)."""
    entry = tree.nodes[node_id]
    assert entry.sender is not None
    entry.sender.stop()
    entry.node.close()
    for suffix in ("-wal", "-shm"):
        (entry.data_dir / f"node.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, entry.data_dir / "node.db")
    entry.node = open_node(entry.data_dir, clock=tree.node_clock(node_id))
    entry.sender = ReportSender(entry.node)


def _import(tree: Tree, node_id: str, paths: list[Path]) -> int:
    node = tree[node_id]
    summary = Importer(node, listeners=default_listeners(node)).import_files(paths)
    assert summary.rejected == 0, summary.errors[:3]
    return summary.accepted


def _notices(tree: Tree, node_id: str, kind: NoticeKind) -> list[str]:
    with tree[node_id].engine.connect() as conn:
        return list(conn.execute(select(OperatorNotice.about).where(OperatorNotice.kind == kind.value)).scalars())


def _notification_texts(tree: Tree, node_id: str) -> str:
    with tree[node_id].engine.connect() as conn:
        return "\n".join(conn.execute(select(Notification.body)).scalars())


def _chain_head(tree: Tree, parent: str, child: str) -> tuple[int, bytes]:
    with tree[parent].engine.connect() as conn:
        row = conn.execute(
            select(child_chains.c.last_sequence, child_chains.c.last_digest).where(child_chains.c.child_id == child)
        ).one()
    return int(row[0]), bytes(row[1])


def _one_restore(base: Path, run: int) -> None:
    # Real time: the operator's command opens the node with its own (real) clock, as it would in production.
    base.mkdir(parents=True)
    tree = Tree(base, IDS, clock=TreeClock.real())
    try:
        operations, faults = 0, 0
        operations += tree.import_synthetic(RESTORED, 8, seed=run, date_from=date(2025, 3, 3), date_to=date(2025, 3, 7))
        operations += tree.import_synthetic("gd.b", 8, seed=run + 50)
        tree.report_up()
        backup = base / "backup.db"
        _backup(tree, RESTORED, backup)
        # After the backup the district imports more and reports it: the parent now holds a longer chain.
        lost = generate(RESTORED, 6, 100 + run, base / "lost", date_from=date(2025, 3, 17), date_to=date(2025, 3, 21))
        operations += _import(tree, RESTORED, list(lost.paths))
        tree.report_up()
        tree.report_up()
        held_before = _chain_head(tree, PARENT, RESTORED)

        _restore(tree, RESTORED, backup)
        faults += 1
        refused = tree.sender(RESTORED).report_now()
        operations += 1
        # Loud at the child: the refusal names the rewritten history; its operators get the recovery command.
        assert refused.failed and "already received" in refused.error, refused
        with tree[RESTORED].engine.connect() as conn:
            last_error = conn.execute(
                select(outbox_table.c.last_error).where(outbox_table.c.status == "pending")
            ).scalar_one()
        assert last_error.startswith("[HISTORY_REWRITTEN]"), last_error
        assert _notices(tree, RESTORED, NoticeKind.REPORT_REFUSED) == [PARENT]
        assert f"supnet reports resync --data-dir {tree.nodes[RESTORED].data_dir}" in _notification_texts(
            tree, RESTORED
        )
        # Loud at the parent: audited refusal with its stable code, a notice naming the child; nothing applied.
        refusals = [
            entry
            for entry in AuditLog(tree[PARENT].engine).entries(limit=None)
            if entry.action == "report.refused" and entry.actor == RESTORED
        ]
        assert refusals and refusals[-1].detail()["code"] == "HISTORY_REWRITTEN"
        assert _notices(tree, PARENT, NoticeKind.CHILD_REPORT_REFUSED) == [RESTORED]
        assert "supnet reports resync" in _notification_texts(tree, PARENT)
        assert _chain_head(tree, PARENT, RESTORED) == held_before
        # A retry is refused again: never accepted silently.
        tree.clock.advance(5)
        assert tree.sender(RESTORED).send_pending().failed

        # Recovery: the operator's command, through the real CLI on the district's data directory.
        cli = typer.Typer()
        reports_cmd.register(cli)
        outcome = CliRunner().invoke(
            cli, ["reports", "resync", "--data-dir", str(tree.nodes[RESTORED].data_dir), "--json"]
        )
        assert outcome.exit_code == 0, outcome.output
        result = json.loads(outcome.stdout)
        assert result["parent_sequence"] == held_before[0] and result["dropped"] >= 1 and result["acked"] >= 1
        assert result["full_sequences"] == [held_before[0] + 1]
        # Only the child itself learns which of its reports the parent holds.
        stub, channel = tree.stub("gd", as_node="gd.b")
        with channel, pytest.raises(grpc.RpcError) as denied:
            stub.GetNodeInfo(NodeInfoRequest(child_id="gd.a"), timeout=5)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        resyncs = [entry for entry in AuditLog(tree[RESTORED].engine).entries() if entry.action == RESYNC_ACTION]
        assert len(resyncs) == 1 and resyncs[0].actor.endswith(f"@{RESTORED}")
        operations += 1
        # The province converges to exactly what the restored district holds ...
        tree.report_up()
        summary = check_tree_invariants(tree, operations=operations, faults=faults)
        print(summary.line(f"restored from backup, after resync, run {run}"))
        assert summary.ok, summary.line()
        # ... and, once the operator re-imported the records lost with the backup, to everything.
        operations += _import(tree, RESTORED, list(lost.paths))
        tree.report_up()
        summary = check_tree_invariants(tree, operations=operations, faults=faults)
        print(summary.line(f"restored from backup, lost records re-imported, run {run}"))
        assert summary.ok, summary.line()
    finally:
        tree.close()


def test_restored_node_is_refused_loudly_and_recovers_with_resync(tmp_path: Path, runs: int) -> None:
    for run in range(max(runs, 1)):  # --runs N by hand; once in CI
        _one_restore(tmp_path / f"run{run}", run)
