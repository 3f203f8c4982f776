"""The audit of subtree searches at one hop: every search served, relayed or refused, in the node's audit log."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from google.protobuf.message import DecodeError

from federation import SupnetError
from federation.proto.v1 import subtree_pb2 as st
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.app import Node
from node.audit_log import Action, AuditLog, AuditResult

__all__ = ["SubtreeAuditor"]

log = logging.getLogger(__name__)


class SubtreeAuditor:
    """Every subtree query a hop served, relayed or refused, in the node's hash-chained audit log.

    Entries use the drill-down actions (their nonces seed the replay cache after a restart, as drill-down's do);
    the query kind reads ``subtree:<kind>``. The actor is the verified caller, never the requester a query names.
    """

    def __init__(self, node: Node) -> None:
        self._log = AuditLog(node.engine)
        self._node_id = node.config.id

    def _record(self, action: str, body: st.SubtreeQueryBody, caller: str, detail: dict[str, Any], result: str) -> None:
        entry: dict[str, Any] = {
            "requester": body.requester_id,
            "query": f"subtree:{body.WhichOneof('request') or ''}",
            "limit": body.limit,
            **detail,
        }
        if body.nonce:
            entry["nonce"] = body.nonce.hex()
        try:
            self._log.record(
                actor=caller[:64] or "(nobody)",
                action=action,
                target=body.target_id or self._node_id,
                detail=entry,
                result=result,
            )
        except SupnetError:
            # The answer (or refusal) must not be lost to a failed audit write; the failure is loud in the log.
            log.exception("node %s could not audit a subtree query by %s", self._node_id, caller)

    def served(self, body: st.SubtreeQueryBody, caller: str, *, forwarded: bool, children: int) -> None:
        """Record an authorized search before this hop's answer goes out.

        Served: answered here and fanned out to ``children``; forwarded: relayed towards the subtree's root.
        """
        action = Action.DRILLDOWN_FORWARDED if forwarded else Action.DRILLDOWN_SERVED
        detail: dict[str, Any] = {"page_size": body.page_size, "children_asked": children}
        if body.HasField("resume"):
            detail["resumed"] = True
        self._record(action, body, caller, detail, AuditResult.OK)

    def refused(self, envelope: SignedEnvelope, caller: str, code: str, reason: str) -> None:
        """Refused here (authorization, freshness, replay, arguments)."""
        body = st.SubtreeQueryBody()
        with contextlib.suppress(DecodeError):  # an undecodable query still names its claimed signer
            body.ParseFromString(envelope.body)
        detail = {"code": code, "reason": reason[:500]}
        if envelope.signer_id and envelope.signer_id != body.requester_id:
            detail["signer"] = envelope.signer_id
        self._record(Action.DRILLDOWN_REFUSED, body, caller, detail, AuditResult.REFUSED)
