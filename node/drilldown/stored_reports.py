"""Drill-down answer of a stored report: this node's own or a child's, exactly as its author signed it (audit).

A request for a numbered report may also ask for the reports just before it (``earlier``): ``supnet verify`` then
gets a node's head and whole history in one query instead of one query per report.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from federation import NotFoundError, outbox_table, received_reports
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.app import Node

# Bounds of one answer's earlier reports: well under the 64 MiB message limit however large the reports are.
MAX_EARLIER_REPORTS = 1000
MAX_EARLIER_BYTES = 16 * 1024 * 1024


def _table_of(node: Node, node_id: str) -> tuple[Any, list[Any]]:
    if node_id == node.config.id:
        return outbox_table, []
    if node_id in {child.id for child in node.config.federation.children}:
        return received_reports, [received_reports.c.child_id == node_id]
    raise NotFoundError(
        f"node {node.config.id} holds reports of itself and its children only, not of {node_id}; ask {node_id}'s parent"
    )


def _envelope(data: bytes) -> SignedEnvelope:
    envelope = SignedEnvelope()
    envelope.ParseFromString(bytes(data))
    return envelope


def stored_report(conn: Connection, node: Node, node_id: str, sequence: int) -> SignedEnvelope:
    """A report envelope exactly as signed: this node's own (outbox_table) or one received from a child."""
    table, conditions = _table_of(node, node_id)
    if sequence:
        conditions.append(table.c.sequence == sequence)
    statement = select(table.c.envelope, table.c.sequence).where(*conditions).order_by(table.c.sequence.desc()).limit(1)
    row = conn.execute(statement).first()
    if row is None:
        which = f"#{sequence}" if sequence else "any report"
        raise NotFoundError(f"node {node.config.id} holds no report {which} of {node_id}")
    return _envelope(row.envelope)


def stored_reports_before(
    conn: Connection, node: Node, node_id: str, sequence: int, count: int
) -> list[SignedEnvelope]:
    """Reports #sequence-1, #sequence-2, ... of node_id as held here: at most ``count``, stopping at a gap."""
    table, conditions = _table_of(node, node_id)
    count = min(count, MAX_EARLIER_REPORTS, max(sequence - 1, 0))
    if count <= 0:
        return []
    conditions += [table.c.sequence < sequence, table.c.sequence >= sequence - count]
    statement = select(table.c.envelope, table.c.sequence).where(*conditions).order_by(table.c.sequence.desc())
    found: list[SignedEnvelope] = []
    size = 0
    for expected, row in zip(range(sequence - 1, 0, -1), conn.execute(statement), strict=False):
        size += len(row.envelope)
        if row.sequence != expected or size > MAX_EARLIER_BYTES:
            break
        found.append(_envelope(row.envelope))
    return found


def answer_report(node: Node, request: dd.ReportRequest) -> tuple[dd.ReportAnswer, str]:
    """A stored report by (node, sequence); sequence 0 means the latest; ``earlier`` adds the ones before it."""
    node_id = request.node_id or node.config.id
    sequence = int(request.sequence)
    with node.engine.connect() as conn:
        envelope = stored_report(conn, node, node_id, sequence)
        earlier = stored_reports_before(conn, node, node_id, sequence, int(request.earlier)) if sequence else []
    return dd.ReportAnswer(report=envelope, earlier=earlier), ""
