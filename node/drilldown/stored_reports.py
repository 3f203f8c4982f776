"""Drill-down answer of a stored report: this node's own or a child's, exactly as its author signed it (audit)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from federation import NotFoundError, outbox_table, received_reports
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.app import Node


def stored_report(conn: Connection, node: Node, node_id: str, sequence: int) -> SignedEnvelope:
    """A report envelope exactly as signed: this node's own (outbox_table) or one received from a child."""
    if node_id == node.config.id:
        table, conditions = outbox_table, []
    elif node_id in {child.id for child in node.config.federation.children}:
        table, conditions = received_reports, [received_reports.c.child_id == node_id]
    else:
        raise NotFoundError(
            f"node {node.config.id} holds reports of itself and its children only, not of {node_id}; "
            f"ask {node_id}'s parent"
        )
    if sequence:
        conditions.append(table.c.sequence == sequence)
    statement = select(table.c.envelope, table.c.sequence).where(*conditions).order_by(table.c.sequence.desc()).limit(1)
    row = conn.execute(statement).first()
    if row is None:
        which = f"#{sequence}" if sequence else "any report"
        raise NotFoundError(f"node {node.config.id} holds no report {which} of {node_id}")
    envelope = SignedEnvelope()
    envelope.ParseFromString(bytes(row.envelope))
    return envelope


def answer_report(node: Node, request: dd.ReportRequest) -> tuple[dd.ReportAnswer, str]:
    """A stored report by (node, sequence); sequence 0 means the latest."""
    node_id = request.node_id or node.config.id
    with node.engine.connect() as conn:
        envelope = stored_report(conn, node, node_id, int(request.sequence))
    return dd.ReportAnswer(report=envelope), ""
