"""What every directive event does wherever it is made or passes: signing, the state it moves, where it goes next.

Shared by the operator's actions at the issuer and the target (node.directives.lifecycle), the receiving hop
(node.directives.receive) and the deadline check (node.directives.deadlines). One event's effect on a directive's
row is the same at every node of its path, so each hop keeps the same view of the directive's state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from federation import envelope_digest, serialize
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DirectiveEvent, FindingStatus
from node.app import Node
from node.audit_log import record_audit
from node.directives.messages import (
    EVENT_KINDS,
    NONCE_BYTES,
    child_towards,
    from_ms,
    to_ms,
    validate_event,
)
from node.directives.store import enqueue, insert_event, update_directive
from node.domain import due_at
from node.errors import CalendarError, ConfigError
from node.trust import signing_identity

__all__ = [
    "Deadlines",
    "apply_event",
    "audit",
    "next_hop_down",
    "next_hop_up",
    "response_deadlines",
    "sign_event",
    "store_and_queue",
]

log = logging.getLogger(__name__)

# Status changes an event makes (from -> to); an event arriving out of order changes no status (it is still kept).
_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "delivered": (("issued",), "delivered"),
    "acknowledged": (("issued", "delivered"), "acknowledged"),
    "responded": (("issued", "delivered", "acknowledged", "reopened"), "responded"),
    "closed": (("issued", "delivered", "acknowledged", "responded", "reopened"), "closed"),
    "reopened": (("responded",), "reopened"),
}
_TIME_COLUMNS = {
    "delivered": "delivered_at",
    "acknowledged": "acknowledged_at",
    "responded": "responded_at",
    "closed": "closed_at",
}


@dataclass(frozen=True, slots=True)
class Deadlines:
    """When a response is due and when a late one escalates (the target's calendar); None: no response is due."""

    due_at: datetime | None
    escalate_at: datetime | None
    problem: str = ""


def response_deadlines(node: Node, delivered_at: datetime, respond_within_workdays: int) -> Deadlines:
    """Due at the end of the N-th working day after delivery; escalated ``escalate_after_workdays`` after that.

    A calendar without data for a needed year yields no deadline (it never guesses) and says why in ``problem``.
    """
    if respond_within_workdays <= 0:
        return Deadlines(None, None)
    try:
        due = due_at(node.calendar, delivered_at, respond_within_workdays)
        escalate = due_at(node.calendar, due, node.config.directives.escalate_after_workdays)
    except CalendarError as error:
        log.error("node %s: no response deadline for a directive: %s", node.config.id, error.message)
        return Deadlines(None, None, error.message)
    return Deadlines(due, escalate)


def sign_event(
    node: Node,
    row: Row[Any],
    kind: str,
    now: datetime,
    *,
    by: str = "",
    text: str = "",
    findings: Sequence[FindingStatus] = (),
    deadlines: Deadlines | None = None,
    directive: SignedEnvelope | None = None,
) -> tuple[SignedEnvelope, DirectiveEvent]:
    """An event about the directive of ``row``, made by this node now and signed with its report key and chain."""
    tz = node.tz
    event = DirectiveEvent(
        directive_id=row.id,
        directive_digest=bytes(row.digest),
        kind=EVENT_KINDS[kind],  # type: ignore[arg-type]
        actor_id=node.config.id,
        actor_person=by,
        at_ms=to_ms(now, tz),
        text=text,
        findings=list(findings),
        nonce=os.urandom(NONCE_BYTES),
    )
    if deadlines is not None:
        event.due_at_ms = to_ms(deadlines.due_at, tz) if deadlines.due_at is not None else 0
        event.escalate_at_ms = to_ms(deadlines.escalate_at, tz) if deadlines.escalate_at is not None else 0
    if directive is not None:
        event.directive.CopyFrom(directive)
    validate_event(event)
    return signing_identity(node).sign_message(event), event


def apply_event(conn: Connection, node: Node, row: Row[Any], kind: str, event: DirectiveEvent) -> str:
    """Move this node's view of the directive by one event of its target (upward) or issuer (downward).

    Returns the status after it. Events of a whole-subtree bulletin's other recipients are history only.
    """
    if kind in ("delivered", "acknowledged", "responded") and event.actor_id != row.target_id:
        return str(row.status)
    tz = node.tz
    values: dict[str, Any] = {}
    column = _TIME_COLUMNS.get(kind)
    if column is not None:
        values[column] = from_ms(event.at_ms, tz)
    if kind == "delivered":
        # Kept whatever the order of arrival: the target signed these times.
        values["due_at"] = from_ms(event.due_at_ms, tz) if event.due_at_ms else None
        values["escalate_at"] = from_ms(event.escalate_at_ms, tz) if event.escalate_at_ms else None
    status = str(row.status)
    transition = _TRANSITIONS.get(kind)
    if transition is not None and status in transition[0]:
        status = values["status"] = transition[1]
    if values:
        update_directive(conn, row.id, **values)
    return status


def next_hop_up(node: Node) -> str:
    """The parent, where upward messages go; ConfigError at the root."""
    parent = node.config.parent_id
    if not parent:
        raise ConfigError(f"node {node.config.id} is the root: it has no parent to send a directive event to")
    return parent


def next_hop_down(node: Node, target_id: str) -> str:
    """The registered child on the way to ``target_id``."""
    return child_towards(node.config.id, target_id, [child.id for child in node.config.federation.children])


def store_and_queue(
    conn: Connection,
    node: Node,
    envelope: SignedEnvelope,
    event: DirectiveEvent,
    *,
    kind: str,
    now: datetime,
    next_hop: str,
) -> None:
    """Keep an event made here in the history and queue it for ``next_hop``."""
    digest = envelope_digest(envelope)
    insert_event(conn, envelope=envelope, event=event, kind=kind, digest=digest, received_from="", now=now, tz=node.tz)
    enqueue(
        conn,
        directive_id=event.directive_id,
        digest=digest,
        message=kind,
        next_hop=next_hop,
        envelope=serialize(envelope),
        now=now,
    )


def audit(conn: Connection, actor: str, action: str, directive_id: str, detail: dict[str, Any]) -> None:
    """The directive's audit entry, last in the transaction (the chain lock is held only for the commit)."""
    record_audit(conn, actor=actor, action=action, target=f"directive:{directive_id}", detail=detail)
