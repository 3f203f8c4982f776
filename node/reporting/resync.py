"""Recovery of a report chain the parent refuses: the operator notices on both sides and ``resync_reports``.

A node restored from an old backup has rewound its chain: its next report reuses a sequence its parent already
holds under another digest, and the parent refuses it (HISTORY_REWRITTEN) — loudly, never by accepting or dropping
it. The child's operators are told to run ``supnet reports resync``: it asks the parent which report it holds for
this node (GetNodeInfo's child head), continues the chain from there (the outbox drops what the parent does not
hold) and sends a FULL report of everything this node has, so the parent's state of it becomes this node's state
(reports are state-based). The command is audited; records lost with the backup are re-imported by the operator
and go up with the next reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import grpc

from federation import ChainHead, short_hex, supnet_error_from_rpc
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.audit_log import AuditLog
from node.errors import InvalidStateError
from node.notify import NoticeKind, notify_operators_resolved
from node.reporting.reports import _build_in_transaction, _build_lock, node_outbox
from node.reporting.sender import ReportSender, SendResult
from node.trust import channel_to, signing_identity

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

RESYNC_ACTION = "report.resynced"
# A resync's FULL report covers every day from here on: the parent's state of this node becomes exactly ours,
# also on days where only the lost history had records (zeroed at the parent, and that drop goes up too).
RESYNC_WINDOW_START = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class ResyncResult:
    """What ``resync_reports`` did: the parent's head, what was dropped, the FULL report and its delivery."""

    parent_id: str
    parent_sequence: int
    local_sequence_before: int
    dropped: int
    full_sequences: list[int] = field(default_factory=list)
    delivered: SendResult = field(default_factory=SendResult)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (CLI ``--json`` and the audit entry)."""
        return {
            "parent_id": self.parent_id,
            "parent_sequence": self.parent_sequence,
            "local_sequence_before": self.local_sequence_before,
            "dropped": self.dropped,
            "full_sequences": self.full_sequences,
            "acked": self.delivered.acked,
            "pending": self.delivered.pending,
            "delivery_error": self.delivered.error,
        }


def parent_head(node: Node) -> ChainHead:
    """The last report of this node its parent accepted (sequence 0: none), asked over GetNodeInfo."""
    federation = node.config.federation
    parent_id = federation.parent_id or node.config.parent_id
    if not parent_id or not federation.parent_address:
        raise InvalidStateError(f"node {node.config.id} has no parent address configured; nothing to resync")
    channel = channel_to(node, federation.parent_address, parent_id)
    try:
        info = NodeServiceStub(channel).GetNodeInfo(
            NodeInfoRequest(child_id=node.config.id), timeout=federation.rpc_timeout_seconds
        )
    except grpc.RpcError as error:
        raise supnet_error_from_rpc(error, federation.parent_address) from error
    finally:
        channel.close()
    if info.node_id != parent_id:
        raise InvalidStateError(f"{federation.parent_address} answers as {info.node_id!r}, not as parent {parent_id}")
    return ChainHead(int(info.child_report_sequence), bytes(info.child_report_digest))


def resync_reports(node: Node, *, actor: str) -> ResyncResult:
    """Continue this node's report chain from its parent's head and deliver a FULL report (audited as ``actor``)."""
    parent_id = node.config.federation.parent_id or node.config.parent_id
    head = parent_head(node)
    outbox = node_outbox(node)
    identity = signing_identity(node)
    now = node.now()
    with _build_lock(node), node.engine.begin() as conn:
        before = outbox.head(conn)
        dropped = outbox.rebase(conn, sequence=head.sequence, digest=head.digest, now=now)
        built = _build_in_transaction(
            node, conn, outbox, identity, kind="full", now=now, only_if_changed=False, full_since=RESYNC_WINDOW_START
        )
    sender = ReportSender(node)
    try:
        delivered = sender.send_pending()
    finally:
        sender.stop()
    result = ResyncResult(
        parent_id=parent_id,
        parent_sequence=head.sequence,
        local_sequence_before=before.sequence if before is not None else 0,
        dropped=dropped,
        full_sequences=[report.sequence for report in built],
        delivered=delivered,
    )
    AuditLog(node.engine).record(
        actor=actor,
        action=RESYNC_ACTION,
        target=f"reports:{node.config.id}->{parent_id}",
        detail={**result.as_dict(), "parent_digest": head.digest.hex()},
        result="ok" if not delivered.failed else "failed",
    )
    log.warning(
        "node %s resynced its reports onto %s's head #%s (%s): dropped %s, full report %s, delivery %s",
        node.config.id,
        parent_id,
        head.sequence,
        short_hex(head.digest),
        dropped,
        result.full_sequences,
        delivered.error or "acknowledged",
    )
    if not delivered.failed:
        notify_operators_resolved(
            node,
            NoticeKind.REPORT_REFUSED,
            parent_id,
            f"reports to {parent_id} get through again",
            f"Node {node.config.id} continued its report chain from #{head.sequence} held by {parent_id} and its "
            f"full report was acknowledged.",
            now=now,
        )
    return result
