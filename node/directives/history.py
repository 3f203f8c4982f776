"""A directive's full signed history as held here, every envelope verified again (``supnet directive show``).

Each envelope is checked through its own certificate chain up to the root (now; an envelope signed before a key
rotation, whose certificate has since expired, at the time it says it was signed: revocation applies either way),
and bound to the rest: the directive is signed by its issuer, every event by the actor it names and about this very
directive (its digest), responses only by the target, closings only by the issuer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from federation import SupnetError, envelope_digest, parse_body
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DirectiveBody, DirectiveEvent
from node.app import Node
from node.directives.messages import EVENT_LABELS, event_kind_name, from_ms
from node.directives.store import (
    DirectiveView,
    OutboxItem,
    directive_row,
    directive_view,
    outbox_items,
    responded_events,
    stored_events,
)
from node.domain import to_iso
from node.trust import NodeTrust, is_ancestor, node_trust

__all__ = ["DirectiveHistory", "HistoryEntry", "LatestResponse", "directive_history", "latest_responses"]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One signed step: the directive itself ('issued') or an event; ``problem`` empty when it verified."""

    kind: str
    label: str
    actor_id: str
    actor_person: str
    at: dt.datetime
    text: str
    detail: dict[str, Any]
    digest: str
    received_from: str
    problem: str

    @property
    def verified(self) -> bool:
        """True when the signature and every binding checked."""
        return not self.problem

    def to_dict(self, tz: ZoneInfo) -> dict[str, Any]:
        """JSON-ready, times with the node's UTC offset."""
        return {
            "kind": self.kind,
            "label": self.label,
            "actor_id": self.actor_id,
            "actor_person": self.actor_person,
            "at": to_iso(self.at, tz),
            "text": self.text,
            **self.detail,
            "digest": self.digest,
            "received_from": self.received_from,
            "verified": self.verified,
            "problem": self.problem,
        }


@dataclass
class DirectiveHistory:
    """The directive as held here, its verified history, and what this node still has to deliver of it."""

    view: DirectiveView
    entries: list[HistoryEntry]
    deliveries: list[OutboxItem] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """True when every step verified."""
        return all(entry.verified for entry in self.entries)

    def to_dict(self, tz: ZoneInfo) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "directive": self.view.to_dict(tz),
            "history": [entry.to_dict(tz) for entry in self.entries],
            "verified": self.verified,
            "deliveries": [item.to_dict(tz) for item in self.deliveries],
        }


def _check_signature(trust: NodeTrust | None, envelope: SignedEnvelope, signed_ms: int) -> str:
    if trust is None:
        return "this node has no certificates to verify signatures with (plaintext mode)"
    try:
        trust.verify_envelope(envelope)
    except SupnetError:
        try:  # signed before a key rotation: its chain was valid when it was made
            trust.verify_envelope(envelope, at=dt.datetime.fromtimestamp(signed_ms / 1000, dt.UTC))
        except SupnetError as error:
            return f"signature: {error.message}"
    return ""


def _event_problem(
    event: DirectiveEvent, kind: str, envelope: SignedEnvelope, body: DirectiveBody, digest: bytes
) -> str:
    if event.actor_id != envelope.signer_id:
        return f"signed by {envelope.signer_id}, names {event.actor_id} as actor"
    if event.directive_id != body.id or event.directive_digest != digest:
        return "is about another directive (id or digest differ)"
    if kind in ("closed", "reopened", "escalated") and event.actor_id != body.issuer_id:
        return f"a {kind} event not signed by the issuer {body.issuer_id}"
    if kind == "responded" and event.actor_id != body.target_id:
        return f"a response not signed by the target {body.target_id}"
    recipient = event.actor_id == body.target_id or (body.whole_subtree and is_ancestor(body.target_id, event.actor_id))
    if kind in ("delivered", "acknowledged") and not recipient:
        return f"a {kind} event not signed by a recipient of the directive"
    return ""


def directive_history(node: Node, directive_id: str) -> DirectiveHistory:
    """The directive held here with every signed step verified again (NotFoundError if not held)."""
    trust = node_trust(node)
    tz = node.tz
    now = node.now()
    with node.engine.connect() as conn:
        row = directive_row(conn, directive_id)
        events = stored_events(conn, directive_id)
        deliveries = outbox_items(conn, directive_id)
    view = directive_view(row, now)
    envelope = SignedEnvelope.FromString(bytes(row.envelope))
    body = parse_body(envelope, DirectiveBody)
    digest = envelope_digest(envelope)
    problem = _check_signature(trust, envelope, body.issued_at_ms)
    if not problem and (envelope.signer_id != body.issuer_id or digest != bytes(row.digest)):
        problem = "not signed by its issuer, or not the digest held"
    entries = [
        HistoryEntry(
            kind="issued",
            label=EVENT_LABELS["issued"],
            actor_id=body.issuer_id,
            actor_person=body.issued_by,
            at=from_ms(body.issued_at_ms, tz),
            text=body.text,
            detail={"target": body.target_id},
            digest=digest.hex(),
            received_from=row.received_from,
            problem=problem,
        )
    ]
    for stored in events:
        event_envelope = SignedEnvelope.FromString(bytes(stored.envelope))
        event = parse_body(event_envelope, DirectiveEvent)
        kind = event_kind_name(event.kind)
        problem = _check_signature(trust, event_envelope, event.at_ms) or _event_problem(
            event, kind, event_envelope, body, digest
        )
        detail: dict[str, Any] = {}
        if event.due_at_ms:
            detail["due_at"] = to_iso(from_ms(event.due_at_ms, tz), tz)
        if event.escalate_at_ms:
            detail["escalate_at"] = to_iso(from_ms(event.escalate_at_ms, tz), tz)
        if event.findings:
            detail["findings"] = [{"index": f.index, "done": f.done, "note": f.note} for f in event.findings]
        entries.append(
            HistoryEntry(
                kind=kind,
                label=EVENT_LABELS[kind],
                actor_id=event.actor_id,
                actor_person=event.actor_person,
                at=from_ms(event.at_ms, tz),
                text=event.text,
                detail=detail,
                digest=bytes(stored.digest).hex(),
                received_from=stored.received_from,
                problem=problem,
            )
        )
    return DirectiveHistory(view, entries, deliveries)


@dataclass(frozen=True, slots=True)
class LatestResponse:
    """The newest response (答复) to a directive as held here, for listings (``directive_history`` verifies it)."""

    directive_id: str
    actor_id: str
    actor_person: str
    at: dt.datetime
    text: str
    findings_done: int
    findings: int


def latest_responses(node: Node, directive_ids: Sequence[str]) -> dict[str, LatestResponse]:
    """The newest response held here to each of ``directive_ids`` that has one (the console's outbox)."""
    latest: dict[str, LatestResponse] = {}
    with node.engine.connect() as conn:
        rows = responded_events(conn, directive_ids)
    for row in rows:  # oldest first: a later response replaces an earlier one
        event = parse_body(SignedEnvelope.FromString(bytes(row.envelope)), DirectiveEvent)
        latest[row.directive_id] = LatestResponse(
            directive_id=row.directive_id,
            actor_id=row.actor_id,
            actor_person=row.actor_person,
            at=row.at,
            text=event.text,
            findings_done=sum(1 for finding in event.findings if finding.done),
            findings=len(event.findings),
        )
    return latest
