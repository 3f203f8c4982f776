"""A directive message arriving at a hop (DirectiveService.Deliver): checked, stored, applied, relayed, audited.

What the node holds decides the checks; storing, applying, queueing it UNCHANGED for the next hop and the audit entry
are one transaction, acknowledged only after it commits.

node.trust's Authorizer has already checked the caller (parent for downward messages, a registered child for upward
ones), the signature through its certificate chain and the directive's route. What only the stored directive can
tell is checked here: an event is bound to the directive held (its digest), its signer is the directive's target
(upward; any node of the target's subtree for a whole-subtree bulletin's delivery and acknowledgement) or issuer
(downward), and this node lies between them. A message held already (a retry, a replay) is acknowledged, audited as
a duplicate and applied nowhere again. At the target, delivery fixes the response's due time by this node's
calendar, signs the delivered event and counts the directive received (node.supervision.record_activity); the
issuer's close counts as closed there. Operators hear of a directive received, answered or escalated to them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import Connection, Row

from federation import AuditResult, envelope_digest, parse_body, serialize
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DirectiveAck, DirectiveBody, DirectiveEvent
from node.app import Node
from node.audit_log import AuditLog, RefusalThrottle
from node.directives.events import (
    Deadlines,
    apply_event,
    audit,
    next_hop_down,
    next_hop_up,
    response_deadlines,
    sign_event,
    store_and_queue,
)
from node.directives.messages import EVENT_KINDS, KIND_LABELS, from_ms, kind_name, validate_body, validate_event
from node.directives.store import (
    directive_row,
    enqueue,
    find_directive,
    insert_directive,
    insert_event,
    update_directive,
)
from node.errors import (
    IntegrityError,
    InvalidStateError,
    PermissionDeniedError,
    SupnetError,
    UnauthenticatedError,
)
from node.notify import NoticeKind, notify_operators_in
from node.store import ACTOR_MAX, lock_revision
from node.supervision import record_activity
from node.trust import DIRECTIVE_BODY_TYPE, DirectiveMessage, NodeTrust, is_ancestor

__all__ = ["DirectiveInbox", "Receipt"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a Deliver did here: the ack to return, and whether anything was queued for a next hop."""

    ack: DirectiveAck
    queued: bool


@dataclass(frozen=True, slots=True)
class _Incoming:
    """One authorized message being received: as signed, its digest, who handed it over, when."""

    envelope: SignedEnvelope
    message: DirectiveMessage
    digest: bytes
    caller: str
    now: dt.datetime


def _is_recipient(node_id: str, row_or_body: Any) -> bool:
    target = row_or_body.target_id
    return node_id == target or (bool(row_or_body.whole_subtree) and is_ancestor(target, node_id))


class DirectiveInbox:
    """The receiving side of DirectiveService for one node: ``receive`` an authorized message, audit ``refused`` ones.

    Refusals are audited once per (caller, signer, code, reason) per ``notifications.operator_notice_cooldown_seconds``
    (a next hop retrying at its backoff), as report refusals are.
    """

    def __init__(self, node: Node, trust: NodeTrust | None) -> None:
        self.node = node
        self._trust = trust
        self._id = node.config.id
        self._log = AuditLog(node.engine)
        self.throttle = RefusalThrottle(node.config.notifications.operator_notice_cooldown_seconds)

    # --- accepted -------------------------------------------------------------------------------------------------

    def receive(self, envelope: SignedEnvelope, message: DirectiveMessage, caller: str) -> Receipt:
        """Store and apply an authorized message, queue it onward; the ack after the commit."""
        digest = envelope_digest(envelope)
        incoming = _Incoming(envelope, message, digest, caller, self.node.now())
        with self.node.engine.begin() as conn:
            # The revision row first: on SQLite the single writer before reading what decides the write; the target
            # counts activity under it (node.store.lock_revision).
            lock_revision(conn)
            if message.directive is not None:
                stored, queued, detail = self._directive(conn, incoming, message.directive)
            else:
                stored, queued, detail = self._event(conn, incoming)
            action = "directive.duplicate" if not stored else detail.pop("action")
            detail.update({"signer": message.signer_id, "digest": digest.hex()})
            audit(conn, caller[:ACTOR_MAX], action, message.directive_id, detail)
        ack = DirectiveAck(directive_id=message.directive_id, digest=digest, stored=stored, node_id=self._id)
        return Receipt(ack, queued)

    def _directive(
        self, conn: Connection, incoming: _Incoming, body: DirectiveBody
    ) -> tuple[bool, bool, dict[str, Any]]:
        node = self.node
        envelope, digest, caller, now = incoming.envelope, incoming.digest, incoming.caller, incoming.now
        validate_body(body)
        recipient = _is_recipient(self._id, body)
        stored = insert_directive(
            conn,
            envelope=envelope,
            body=body,
            digest=digest,
            role="received" if recipient else "relayed",
            status="delivered" if recipient else "issued",
            received_from=caller,
            now=now,
            tz=node.tz,
        )
        detail: dict[str, Any] = {"message": "directive", "issuer": body.issuer_id, "target": body.target_id}
        if not stored:
            return False, False, detail
        raw = serialize(envelope)
        onward: list[str] = []
        if recipient:
            onward = [child.id for child in node.config.federation.children] if body.whole_subtree else []
            self._delivered(conn, body, now)
            detail["action"] = "directive.received"
        else:
            onward = [next_hop_down(node, body.target_id)]
            detail["action"] = "directive.relayed"
        for hop in onward:
            enqueue(conn, directive_id=body.id, digest=digest, message="directive", next_hop=hop, envelope=raw, now=now)
        if onward:
            detail["via"] = onward
        return True, True, detail

    def _delivered(self, conn: Connection, body: DirectiveBody, now: dt.datetime) -> None:
        """At a recipient: fix the deadlines (the named target only), count it, sign delivery, tell the operators."""
        node = self.node
        row = directive_row(conn, body.id)
        is_target = body.target_id == self._id
        deadlines = response_deadlines(node, now, body.respond_within_workdays) if is_target else Deadlines(None, None)
        envelope, event = sign_event(node, row, "delivered", now, deadlines=deadlines)
        apply_event(conn, node, row, "delivered", event)
        if not is_target:  # another node of a whole subtree: its own copy is delivered (apply_event follows the target)
            update_directive(conn, body.id, delivered_at=now)
        record_activity(conn, now.date(), "directives_received", row.kind)
        store_and_queue(conn, node, envelope, event, kind="delivered", now=now, next_hop=next_hop_up(node))
        label = KIND_LABELS.get(row.kind, row.kind)
        due = f"答复期限 due {deadlines.due_at:%Y-%m-%d %H:%M}" if deadlines.due_at else "无需答复 no response due"
        if deadlines.problem:
            due = f"答复期限无法计算 no due time: {deadlines.problem}"
        notify_operators_in(
            conn,
            node,
            NoticeKind.DIRECTIVE_RECEIVED,
            body.id,
            subject=f"收到{label} {body.id} from {body.issuer_id}",
            text=f"{label} ({row.kind}) {body.id} from {body.issuer_id} ({body.issued_by}) to {body.target_id}; "
            f"{due}.\n{body.text}\nsupnet directive show {body.id}",
            now=now,
        )

    def _event(self, conn: Connection, incoming: _Incoming) -> tuple[bool, bool, dict[str, Any]]:
        message = incoming.message
        envelope, digest, caller, now = incoming.envelope, incoming.digest, incoming.caller, incoming.now
        event = message.event
        assert event is not None
        kind = validate_event(event)
        detail: dict[str, Any] = {"message": kind}
        if kind == "escalated":
            return self._escalation(conn, incoming, event, detail)
        row = find_directive(conn, event.directive_id)
        if row is None:
            raise InvalidStateError(
                f"directive {event.directive_id} is not held at {self._id}: its {kind} event cannot pass (yet)"
            )
        self._check_event(row, event, kind, message.signer_id)
        stored = insert_event(
            conn,
            envelope=envelope,
            event=event,
            kind=kind,
            digest=digest,
            received_from=caller,
            now=now,
            tz=self.node.tz,
        )
        if not stored:
            return False, False, detail
        apply_event(conn, self.node, row, kind, event)
        final = self._id == (row.issuer_id if message.direction == "up" else row.target_id)
        detail["action"] = "directive.event_received" if final else "directive.event_relayed"
        if not final:
            hop = next_hop_up(self.node) if message.direction == "up" else next_hop_down(self.node, row.target_id)
            enqueue(
                conn,
                directive_id=row.id,
                digest=digest,
                message=kind,
                next_hop=hop,
                envelope=serialize(envelope),
                now=now,
            )
            detail["via"] = hop
            return True, True, detail
        self._arrived(conn, row, incoming, kind)
        return True, False, detail

    def _check_event(self, row: Row[Any], event: DirectiveEvent, kind: str, signer: str) -> None:
        if bytes(row.digest) != event.directive_digest:
            raise PermissionDeniedError(
                f"{kind} event names directive {row.id} with another digest than the one held at {self._id}"
            )
        if kind in ("closed", "reopened"):
            if signer != row.issuer_id:
                raise PermissionDeniedError(
                    f"a {kind} event of directive {row.id} is signed by {signer}; only its issuer {row.issuer_id} "
                    "closes or reopens it"
                )
            on_path = is_ancestor(row.issuer_id, self._id) and is_ancestor(self._id, row.target_id, or_self=True)
        else:
            allowed = signer == row.target_id or (
                kind != "responded" and bool(row.whole_subtree) and is_ancestor(row.target_id, signer)
            )
            if not allowed:
                raise PermissionDeniedError(
                    f"a {kind} event of directive {row.id} is signed by {signer}, not by its target {row.target_id}"
                )
            on_path = is_ancestor(self._id, signer) and is_ancestor(row.issuer_id, self._id, or_self=True)
        if not on_path:
            raise PermissionDeniedError(f"a {kind} event of directive {row.id} from {signer} does not pass {self._id}")

    def _arrived(self, conn: Connection, row: Row[Any], incoming: _Incoming, kind: str) -> None:
        """At the end of an event's way: the target counts a close; operators hear of a response or a reopening."""
        node = self.node
        event, digest, now = incoming.message.event, incoming.digest, incoming.now
        assert event is not None
        label = KIND_LABELS.get(row.kind, row.kind)
        at = from_ms(event.at_ms, node.tz)
        if kind == "closed" and row.target_id == self._id and row.status != "closed":
            record_activity(conn, at.date(), "directives_closed", row.kind)
        if kind == "responded" and event.actor_id == row.target_id:
            notify_operators_in(
                conn,
                node,
                NoticeKind.DIRECTIVE_RESPONDED,
                f"{row.id}#{digest.hex()[:8]}",
                subject=f"{label} {row.id}: {row.target_id} 已答复 responded",
                text=f"{row.target_id} ({event.actor_person}) responded to {label} {row.id} at {at:%Y-%m-%d %H:%M}:\n"
                f"{event.text}\nclose it: supnet directive close {row.id}; or reopen it: supnet directive reopen "
                f"{row.id} --text …",
                now=now,
            )
        if kind == "reopened" and row.target_id == self._id:
            notify_operators_in(
                conn,
                node,
                NoticeKind.DIRECTIVE_RECEIVED,
                f"{row.id}#{digest.hex()[:8]}",
                subject=f"{label} {row.id}: 退回重办 reopened by {row.issuer_id}",
                text=f"{row.issuer_id} did not accept the response to {label} {row.id}:\n{event.text}\n"
                f"respond again: supnet directive respond {row.id} --text …",
                now=now,
            )

    def _escalation(
        self, conn: Connection, incoming: _Incoming, event: DirectiveEvent, detail: dict[str, Any]
    ) -> tuple[bool, bool, dict[str, Any]]:
        """The issuer's parent: an escalation carries the directive this node never saw (signed by that issuer)."""
        envelope, digest, caller, now = incoming.envelope, incoming.digest, incoming.caller, incoming.now
        inner = event.directive
        if inner.body_type != DIRECTIVE_BODY_TYPE or envelope_digest(inner) != event.directive_digest:
            raise PermissionDeniedError(f"escalation of {event.directive_id} does not carry the directive it names")
        if self._trust is None:
            raise PermissionDeniedError(f"node {self._id} has no certificates to verify an escalated directive with")
        try:
            self._trust.verify_envelope(inner)
        except IntegrityError as error:
            raise UnauthenticatedError(f"escalated directive {event.directive_id}: {error.message}") from error
        body = parse_body(inner, DirectiveBody)
        validate_body(body)
        if body.id != event.directive_id or body.issuer_id != event.actor_id or inner.signer_id != body.issuer_id:
            raise PermissionDeniedError(
                f"escalation of {event.directive_id} by {event.actor_id} carries directive {body.id} of "
                f"{body.issuer_id}; an issuer escalates only its own directives"
            )
        if self._id != body.issuer_id.rpartition(".")[0]:
            raise PermissionDeniedError(f"escalations of {body.issuer_id} go to its parent, not to {self._id}")
        insert_directive(
            conn,
            envelope=inner,
            body=body,
            digest=event.directive_digest,
            role="escalated",
            status="escalated",
            received_from=caller,
            now=now,
            tz=self.node.tz,
        )
        stored = insert_event(
            conn,
            envelope=envelope,
            event=event,
            kind="escalated",
            digest=digest,
            received_from=caller,
            now=now,
            tz=self.node.tz,
        )
        if not stored:
            return False, False, detail
        label = KIND_LABELS[kind_name(body.kind)]
        notify_operators_in(
            conn,
            self.node,
            NoticeKind.DIRECTIVE_ESCALATED,
            body.id,
            subject=f"逾期上报: {label} {body.id} of {body.issuer_id} to {body.target_id} unanswered",
            text=f"{body.issuer_id} escalates {label} {body.id} to {body.target_id}: {event.text}\n{body.text}\n"
            f"supnet directive show {body.id}",
            now=now,
        )
        detail.update({"action": "directive.escalated_here", "issuer": body.issuer_id, "target": body.target_id})
        return True, False, detail

    # --- refused --------------------------------------------------------------------------------------------------

    def refused(self, envelope: SignedEnvelope, caller: str, error: SupnetError) -> None:
        """Audit a refusal (own transaction): the verified caller as actor, the claimed signer and what it was."""
        actor = caller[:ACTOR_MAX]
        signer = envelope.signer_id[:ACTOR_MAX] or "(no signer)"
        at = dt.datetime.now(dt.UTC)
        admitted = self.throttle.admit(actor, (signer, error.code, error.message), at)
        if admitted is None:
            return
        directive_id, message = _describe(envelope)
        detail: dict[str, Any] = {
            "code": error.code,
            "reason": error.message[:500],
            "signer": signer,
            "message": message,
            **admitted,
        }
        try:
            self._log.record(
                actor=actor,
                action="directive.refused",
                target=f"directive:{directive_id}" if directive_id else "directive",
                detail=detail,
                result=AuditResult.REFUSED,
                at=at,
            )
        except SupnetError:
            log.exception("node %s could not audit a refused directive message from %s", self._id, actor)


def _describe(envelope: SignedEnvelope) -> tuple[str, str]:
    """(directive id, message kind) of an envelope as far as it parses (a refusal still names what it claimed)."""
    if envelope.body_type == DIRECTIVE_BODY_TYPE:
        body = DirectiveBody()
        with contextlib.suppress(DecodeError):
            body.ParseFromString(envelope.body)
        return body.id, "directive"
    event = DirectiveEvent()
    with contextlib.suppress(DecodeError):
        event.ParseFromString(envelope.body)
    names = {number: name for name, number in EVENT_KINDS.items()}
    return event.directive_id, names.get(event.kind, envelope.body_type or "?")
