"""The operator's side of a directive (docs/domain.md §8): issue; acknowledge, respond; close, reopen.

Issuing, closing and reopening happen at the issuer, acknowledging and responding at the target. Each action is one
transaction: the signed message, this node's view of the directive, the message queued for the next hop (delivered
by the DirectiveSender of ``supnet serve``), the target's activity counts (node.supervision.record_activity:
acknowledged, responded on time) and the audit entry commit together. An action the directive's state does not allow
is an InvalidStateError saying what is allowed. ``by`` names the official in the signed message, ``actor`` the audit
log's actor (default: the OS user; the web console passes ``web:NAME@NODE``).

Lifecycle: issued → delivered → acknowledged → responded → closed, or reopened → responded again …
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Row

from federation import envelope_digest, parse_body, serialize
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DirectiveBody
from node.app import Node
from node.audit_log import operator_actor
from node.directives.events import apply_event, audit, next_hop_down, next_hop_up, sign_event, store_and_queue
from node.directives.messages import (
    STATUS_LABELS,
    FindingDraft,
    build_body,
    finding_statuses,
    new_directive_id,
    to_ms,
)
from node.directives.store import (
    DirectiveView,
    directive_row,
    directive_view,
    enqueue,
    insert_directive,
    list_directives,
    update_directive,
)
from node.errors import ConfigError, InvalidArgumentError, InvalidStateError
from node.store import lock_revision
from node.supervision import record_activity
from node.trust import is_ancestor, node_trust, signing_identity

__all__ = [
    "IssueRequest",
    "acknowledge",
    "attachment_digest",
    "close",
    "directives",
    "get_directive",
    "issue",
    "reopen",
    "respond",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """What an issuing operator says (``supnet directive issue``)."""

    target_id: str
    kind: str
    text: str
    case_no: str = ""
    department: str = ""
    item_code: str = ""
    findings: Sequence[FindingDraft] = ()
    respond_within_workdays: int | None = None
    whole_subtree: bool = False
    attachments: Sequence[bytes] = ()
    issued_by: str = ""


def _person(by: str) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return f"uid{os.getuid()}"


def attachment_digest(path: Path) -> bytes:
    """SHA-256 of an attachment file (directives carry the digest, never the bytes)."""
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                hasher.update(block)
    except OSError as error:
        raise InvalidArgumentError(f"attachment {path} cannot be read: {error.strerror}") from error
    return hasher.digest()


def _require_certificates(node: Node) -> None:
    if node_trust(node) is None:
        raise ConfigError(
            f"node {node.config.id} runs without certificates (insecure plaintext mode): directives are signed and "
            "verified through certificate chains at every hop; enrol the node first"
        )


def issue(node: Node, request: IssueRequest, *, actor: str | None = None) -> DirectiveView:
    """Sign a directive to a descendant and queue it for the child on its way; returns it as held here.

    ``actor`` names who acted in the audit log (the console's ``web:NAME@NODE``); default: the OS user.
    """
    _require_certificates(node)
    own_id = node.config.id
    if not is_ancestor(own_id, request.target_id):
        raise InvalidArgumentError(
            f"{request.target_id} is not below {own_id}: a directive goes only to a descendant (never to an ancestor, "
            "a sibling or the node itself)"
        )
    child = next_hop_down(node, request.target_id)
    address = next((c.address for c in node.config.federation.children if c.id == child), "")
    if not address:
        raise ConfigError(
            f"federation.children: child {child} (on the way to {request.target_id}) has no address to deliver to"
        )
    within = request.respond_within_workdays
    if within is None:
        within = 0 if request.kind == "bulletin" else node.config.directives.default_respond_within_workdays
    now = node.now()
    body = build_body(
        directive_id=new_directive_id(own_id, now),
        kind=request.kind,
        issuer_id=own_id,
        issued_by=_person(request.issued_by),
        target_id=request.target_id,
        text=request.text,
        issued_at_ms=to_ms(now, node.tz),
        respond_within_workdays=within,
        case_no=request.case_no,
        department=request.department,
        item_code=request.item_code,
        findings=request.findings,
        attachments=request.attachments,
        whole_subtree=request.whole_subtree,
    )
    envelope = signing_identity(node).sign_message(body)
    digest = envelope_digest(envelope)
    with node.engine.begin() as conn:
        insert_directive(
            conn,
            envelope=envelope,
            body=body,
            digest=digest,
            role="issued",
            status="issued",
            received_from="",
            now=now,
            tz=node.tz,
        )
        enqueue(
            conn,
            directive_id=body.id,
            digest=digest,
            message="directive",
            next_hop=child,
            envelope=serialize(envelope),
            now=now,
        )
        audit(
            conn,
            actor or operator_actor(own_id),
            "directive.issued",
            body.id,
            {
                "kind": request.kind,
                "target": request.target_id,
                "issued_by": body.issued_by,
                "respond_within_workdays": within,
                "whole_subtree": body.whole_subtree,
                "via": child,
                "digest": digest.hex(),
            },
        )
        view = directive_view(directive_row(conn, body.id), now)
    log.info("directive %s (%s) to %s queued for %s", body.id, request.kind, request.target_id, child)
    return view


def get_directive(node: Node, directive_id: str) -> DirectiveView:
    """One directive held here (NotFoundError if none)."""
    with node.engine.connect() as conn:
        return directive_view(directive_row(conn, directive_id), node.now())


def directives(
    node: Node, *, role: str | None = None, open_only: bool = False, overdue_only: bool = False
) -> list[DirectiveView]:
    """Directives held here, newest first (``role``: received = inbox, issued = outbox)."""
    with node.engine.connect() as conn:
        return list_directives(conn, node.now(), role=role, open_only=open_only, overdue_only=overdue_only)


def _locked_row(conn: Connection, directive_id: str) -> Row[Any]:
    # The revision row first: on SQLite the transaction becomes the single writer before it reads the state it
    # decides on, and these actions count activity under the metric revision (node.store.lock_revision).
    lock_revision(conn)
    return directive_row(conn, directive_id)


def _refuse(row: Row[Any], action: str, allowed: Sequence[str]) -> InvalidStateError:
    label = STATUS_LABELS.get(row.status, row.status)
    return InvalidStateError(
        f"directive {row.id} is {row.status} ({label}) here; {action} only when it is {' or '.join(allowed)}"
    )


def _at_recipient(node: Node, row: Row[Any], action: str, *, target_only: bool) -> None:
    if row.role != "received" or (target_only and row.target_id != node.config.id):
        raise InvalidStateError(
            f"directive {row.id} is addressed to {row.target_id}, not to {node.config.id}: only its target may {action}"
            if target_only
            else f"directive {row.id} was not received here ({row.role}): only a recipient may {action}"
        )


def _at_issuer(node: Node, row: Row[Any], action: str) -> None:
    if row.role != "issued":
        raise InvalidStateError(f"directive {row.id} was issued by {row.issuer_id}: only its issuer may {action}")


def acknowledge(node: Node, directive_id: str, *, by: str = "", actor: str | None = None) -> DirectiveView:
    """签收: a recipient has read the directive (delivered → acknowledged); signed and sent up to the issuer."""
    now = node.now()
    with node.engine.begin() as conn:
        row = _locked_row(conn, directive_id)
        _at_recipient(node, row, "acknowledge it", target_only=False)
        if row.status != "delivered":
            raise _refuse(row, "it can be acknowledged", ["delivered"])
        envelope, event = sign_event(node, row, "acknowledged", now, by=_person(by))
        own_status = "acknowledged" if row.target_id != node.config.id else None
        apply_event(conn, node, row, "acknowledged", event)
        if own_status is not None:  # a whole-subtree recipient: its own copy follows its own acknowledgement
            update_directive(conn, row.id, status=own_status, acknowledged_at=now)
        record_activity(conn, now.date(), "directives_acknowledged", row.kind)
        store_and_queue(conn, node, envelope, event, kind="acknowledged", now=now, next_hop=next_hop_up(node))
        audit(
            conn, actor or operator_actor(node.config.id), "directive.acknowledged", row.id, {"by": event.actor_person}
        )
        return directive_view(directive_row(conn, directive_id), now)


def respond(
    node: Node,
    directive_id: str,
    text: str,
    *,
    done: Sequence[tuple[int, str]] = (),
    by: str = "",
    actor: str | None = None,
) -> DirectiveView:
    """答复: the target's response (for 整改 each finding done or not, with a note); signed and sent up."""
    if not text.strip():
        raise InvalidArgumentError("a response needs its text (--text)")
    now = node.now()
    with node.engine.begin() as conn:
        row = _locked_row(conn, directive_id)
        _at_recipient(node, row, "respond to it", target_only=True)
        allowed = ("delivered", "acknowledged", "reopened")
        if row.status not in allowed:
            raise _refuse(row, "it can be answered", allowed)
        body = parse_body(SignedEnvelope.FromString(bytes(row.envelope)), DirectiveBody)
        if done and not body.findings:
            raise InvalidArgumentError(f"directive {row.id} lists no findings: --finding-done does not apply")
        statuses = finding_statuses(len(body.findings), done) if body.findings else []
        envelope, event = sign_event(node, row, "responded", now, by=_person(by), text=text, findings=statuses)
        on_time = row.due_at is None or now <= row.due_at
        apply_event(conn, node, row, "responded", event)
        if on_time and not row.on_time_counted:
            update_directive(conn, row.id, on_time_counted=True)
            record_activity(conn, now.date(), "directives_responded_on_time", row.kind)
        store_and_queue(conn, node, envelope, event, kind="responded", now=now, next_hop=next_hop_up(node))
        detail: dict[str, Any] = {"by": event.actor_person, "on_time": on_time, "findings_done": len(done)}
        audit(conn, actor or operator_actor(node.config.id), "directive.responded", row.id, detail)
        return directive_view(directive_row(conn, directive_id), now)


def close(node: Node, directive_id: str, *, text: str = "", by: str = "", actor: str | None = None) -> DirectiveView:
    """办结: the issuer accepts the response (or ends a directive that asked none); signed and sent down."""
    now = node.now()
    with node.engine.begin() as conn:
        row = _locked_row(conn, directive_id)
        _at_issuer(node, row, "close it")
        allowed: tuple[str, ...] = ("responded",)
        if not row.respond_within_workdays:
            allowed = ("delivered", "acknowledged", "responded")
        if row.status not in allowed:
            raise _refuse(row, "it can be closed", allowed)
        envelope, event = sign_event(node, row, "closed", now, by=_person(by), text=text)
        apply_event(conn, node, row, "closed", event)
        store_and_queue(
            conn, node, envelope, event, kind="closed", now=now, next_hop=next_hop_down(node, row.target_id)
        )
        audit(conn, actor or operator_actor(node.config.id), "directive.closed", row.id, {"by": event.actor_person})
        return directive_view(directive_row(conn, directive_id), now)


def reopen(node: Node, directive_id: str, text: str, *, by: str = "", actor: str | None = None) -> DirectiveView:
    """退回重办: the issuer does not accept the response and says why; signed and sent down."""
    if not text.strip():
        raise InvalidArgumentError("reopening needs the reason (--text)")
    now = node.now()
    with node.engine.begin() as conn:
        row = _locked_row(conn, directive_id)
        _at_issuer(node, row, "reopen it")
        if row.status != "responded":
            raise _refuse(row, "it can be reopened", ["responded"])
        envelope, event = sign_event(node, row, "reopened", now, by=_person(by), text=text)
        apply_event(conn, node, row, "reopened", event)
        store_and_queue(
            conn, node, envelope, event, kind="reopened", now=now, next_hop=next_hop_down(node, row.target_id)
        )
        audit(conn, actor or operator_actor(node.config.id), "directive.reopened", row.id, {"by": event.actor_person})
        return directive_view(directive_row(conn, directive_id), now)
