"""Directive rows: the directives held here, their signed events, the directive outbox (node.store's tables).

Every function works on the caller's Connection, so a directive's state, its events, what goes to the next hop,
its activity counts and its audit entry commit together (node.directives.lifecycle and .receive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, Table, and_, func, or_, select, update

from federation import parse_body
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DirectiveBody, DirectiveEvent
from node.directives.messages import KIND_LABELS, ROLE_LABELS, STATUS_LABELS, body_subject, from_ms, kind_name
from node.domain import to_iso
from node.errors import ConflictError, NotFoundError
from node.store import Directive, DirectiveOutboxEntry, dialect_insert
from node.store import DirectiveEvent as DirectiveEventRow

__all__ = [
    "ANSWERED_STATUSES",
    "DirectiveView",
    "OutboxItem",
    "directive_row",
    "directive_view",
    "enqueue",
    "insert_directive",
    "insert_event",
    "list_directives",
    "outbox_items",
    "responded_events",
    "stored_events",
    "update_directive",
]

directives_table = cast(Table, Directive.__table__)
events_table = cast(Table, DirectiveEventRow.__table__)
outbox_table = cast(Table, DirectiveOutboxEntry.__table__)
_d = directives_table.c
_e = events_table.c
_o = outbox_table.c

OUTBOX_PENDING = "pending"
OUTBOX_ACKED = "acked"
OUTBOX_REFUSED = "refused"
# A response stands (or the directive is over): not overdue, nothing to escalate.
ANSWERED_STATUSES: tuple[str, ...] = ("responded", "closed")


@dataclass(frozen=True, slots=True)
class DirectiveView:
    """A directive as ``supnet directive list/show`` shows it: this node's view of its state."""

    id: str
    role: str
    kind: str
    kind_label: str
    issuer_id: str
    issued_by: str
    target_id: str
    whole_subtree: bool
    subject_kind: str
    subject: str
    text: str
    findings: list[dict[str, Any]]
    attachments: list[str]
    respond_within_workdays: int
    issued_at: datetime
    status: str
    status_label: str
    received_from: str
    delivered_at: datetime | None
    acknowledged_at: datetime | None
    responded_at: datetime | None
    closed_at: datetime | None
    due_at: datetime | None
    escalate_at: datetime | None
    overdue: bool
    overdue_marked_at: datetime | None
    escalation_marked_at: datetime | None
    digest: str

    def to_dict(self, tz: ZoneInfo) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601 with the node's UTC offset."""
        return {
            key: (to_iso(value, tz) if isinstance(value, datetime) else value) for key, value in asdict(self).items()
        }


def _overdue(row: Row[Any], now: datetime) -> bool:
    return row.due_at is not None and row.due_at < now and row.status not in ANSWERED_STATUSES


def directive_view(row: Row[Any], now: datetime) -> DirectiveView:
    """The view of a ``directives`` row (the signed body is read for what only it holds)."""
    body = parse_body(SignedEnvelope.FromString(bytes(row.envelope)), DirectiveBody)
    return DirectiveView(
        id=row.id,
        role=row.role,
        kind=row.kind,
        kind_label=KIND_LABELS.get(row.kind, row.kind),
        issuer_id=row.issuer_id,
        issued_by=row.issued_by,
        target_id=row.target_id,
        whole_subtree=bool(row.whole_subtree),
        subject_kind=row.subject_kind,
        subject=row.subject,
        text=body.text,
        findings=[
            {"index": index, "text": f.text, "owner_department": f.owner_department, "owner_post": f.owner_post}
            for index, f in enumerate(body.findings, start=1)
        ],
        attachments=[digest.hex() for digest in body.attachment_sha256],
        respond_within_workdays=row.respond_within_workdays,
        issued_at=row.issued_at,
        status=row.status,
        status_label=STATUS_LABELS.get(row.status, row.status),
        received_from=row.received_from,
        delivered_at=row.delivered_at,
        acknowledged_at=row.acknowledged_at,
        responded_at=row.responded_at,
        closed_at=row.closed_at,
        due_at=row.due_at,
        escalate_at=row.escalate_at,
        overdue=_overdue(row, now),
        overdue_marked_at=row.overdue_marked_at,
        escalation_marked_at=row.escalation_marked_at,
        digest=bytes(row.digest).hex(),
    )


def role_label(role: str) -> str:
    """收到 / 发出 / 转送 / 上报."""
    return ROLE_LABELS.get(role, role)


# -- directives ----------------------------------------------------------------------------------------------------
def directive_row(conn: Connection, directive_id: str) -> Row[Any]:
    """The ``directives`` row of an id; NotFoundError naming it if this node holds none."""
    row = conn.execute(select(directives_table).where(_d.id == directive_id)).first()
    if row is None:
        raise NotFoundError(f"directive {directive_id} is not held at this node")
    return row


def find_directive(conn: Connection, directive_id: str) -> Row[Any] | None:
    """The row of an id, or None."""
    return conn.execute(select(directives_table).where(_d.id == directive_id)).first()


def insert_directive(
    conn: Connection,
    *,
    envelope: SignedEnvelope,
    body: DirectiveBody,
    digest: bytes,
    role: str,
    status: str,
    received_from: str,
    now: datetime,
    tz: ZoneInfo,
) -> bool:
    """Store a directive (True) or find it held already with this digest (False); ConflictError for another digest."""
    subject_kind, subject = body_subject(body)
    stored = conn.execute(
        dialect_insert(conn, directives_table)
        .values(
            id=body.id,
            role=role,
            kind=kind_name(body.kind),
            issuer_id=body.issuer_id,
            issued_by=body.issued_by,
            target_id=body.target_id,
            whole_subtree=body.whole_subtree,
            subject_kind=subject_kind,
            subject=subject,
            respond_within_workdays=body.respond_within_workdays,
            issued_at=from_ms(body.issued_at_ms, tz),
            digest=digest,
            envelope=envelope.SerializeToString(deterministic=True),
            status=status,
            received_from=received_from,
            stored_at=now,
            on_time_counted=False,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    ).rowcount
    if stored:
        return True
    held = bytes(directive_row(conn, body.id).digest)
    if held != digest:
        raise ConflictError(
            f"directive {body.id} is held here with another content (digest {held.hex()[:16]}…, this one "
            f"{digest.hex()[:16]}…); an issuer never reuses an id"
        )
    return False


def update_directive(conn: Connection, directive_id: str, **values: Any) -> None:
    """Set columns of a directive's row."""
    conn.execute(update(directives_table).where(_d.id == directive_id).values(**values))


def list_directives(
    conn: Connection,
    now: datetime,
    *,
    role: str | None = None,
    open_only: bool = False,
    overdue_only: bool = False,
    limit: int | None = 200,
) -> list[DirectiveView]:
    """Directives held here, newest first; ``open_only``: not closed; ``overdue_only``: response due and missing."""
    query = select(directives_table).order_by(_d.issued_at.desc(), _d.id.desc())
    if role is not None:
        query = query.where(_d.role == role)
    if open_only:
        query = query.where(_d.status != "closed")
    if overdue_only:
        query = query.where(_d.due_at.is_not(None), _d.due_at < now, _d.status.not_in(ANSWERED_STATUSES))
    if limit is not None:
        query = query.limit(limit)
    return [directive_view(row, now) for row in conn.execute(query)]


def deadline_candidates(conn: Connection, now: datetime) -> list[Row[Any]]:
    """Directives issued or received here, their response due and missing, a step (overdue, escalation) not taken."""
    return list(
        conn.execute(
            select(directives_table).where(
                _d.role.in_(("issued", "received")),
                _d.due_at.is_not(None),
                _d.due_at < now,
                _d.status.not_in(ANSWERED_STATUSES),
                or_(
                    _d.overdue_marked_at.is_(None),
                    and_(_d.escalation_marked_at.is_(None), _d.escalate_at.is_not(None), _d.escalate_at < now),
                ),
            )
        )
    )


# -- events --------------------------------------------------------------------------------------------------------
def insert_event(
    conn: Connection,
    *,
    envelope: SignedEnvelope,
    event: DirectiveEvent,
    kind: str,
    digest: bytes,
    received_from: str,
    now: datetime,
    tz: ZoneInfo,
) -> bool:
    """Store an event (True), or find it held already (False: a retry or a replay, applied once)."""
    return bool(
        conn.execute(
            dialect_insert(conn, events_table)
            .values(
                directive_id=event.directive_id,
                digest=digest,
                kind=kind,
                actor_id=event.actor_id,
                actor_person=event.actor_person,
                at=from_ms(event.at_ms, tz),
                envelope=envelope.SerializeToString(deterministic=True),
                received_from=received_from,
                stored_at=now,
            )
            .on_conflict_do_nothing(index_elements=["directive_id", "digest"])
        ).rowcount
    )


def responded_events(conn: Connection, directive_ids: Sequence[str]) -> list[Row[Any]]:
    """The response events held for ``directive_ids``, oldest first (the newest per directive last)."""
    if not directive_ids:
        return []
    query = (
        select(_e.directive_id, _e.actor_id, _e.actor_person, _e.at, _e.envelope)
        .where(_e.kind == "responded", _e.directive_id.in_(list(directive_ids)))
        .order_by(_e.at, _e.id)
    )
    return list(conn.execute(query))


def stored_events(conn: Connection, directive_id: str) -> list[Row[Any]]:
    """A directive's events held here, in the order they were made (then stored)."""
    return list(conn.execute(select(events_table).where(_e.directive_id == directive_id).order_by(_e.at, _e.id)))


# -- outbox --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message for the next hop."""

    id: int
    directive_id: str
    digest: bytes
    message: str
    next_hop: str
    envelope: bytes
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    acked_at: datetime | None

    def to_dict(self, tz: ZoneInfo) -> dict[str, Any]:
        """JSON-ready (without the envelope bytes)."""
        return {
            "message": self.message,
            "next_hop": self.next_hop,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": to_iso(self.next_attempt_at, tz),
            "last_error": self.last_error,
            "created_at": to_iso(self.created_at, tz),
            "acked_at": to_iso(self.acked_at, tz) if self.acked_at is not None else None,
        }


def _item(row: Row[Any]) -> OutboxItem:
    values = dict(row._mapping)
    values["digest"] = bytes(values["digest"])
    values["envelope"] = bytes(values["envelope"])
    return OutboxItem(**values)


def enqueue(
    conn: Connection, *, directive_id: str, digest: bytes, message: str, next_hop: str, envelope: bytes, now: datetime
) -> bool:
    """Queue a signed message for the next hop, due now (once per message and hop); True when newly queued."""
    return bool(
        conn.execute(
            dialect_insert(conn, outbox_table)
            .values(
                directive_id=directive_id,
                digest=digest,
                message=message,
                next_hop=next_hop,
                envelope=envelope,
                status=OUTBOX_PENDING,
                attempts=0,
                next_attempt_at=now,
                last_error="",
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["digest", "next_hop"])
        ).rowcount
    )


def due_items(
    conn: Connection, now: datetime, limit: int = 200, *, directive_id: str | None = None
) -> list[OutboxItem]:
    """What to send now, oldest first: per next hop and directive, its pending messages up to the first still waiting.

    The messages of one directive to one hop keep their order (a directive before its closing), so they wait behind
    their oldest until it is delivered or refused; another directive's messages to that hop do not wait for them.
    """
    query = select(outbox_table).where(_o.status == OUTBOX_PENDING)
    if directive_id is not None:
        query = query.where(_o.directive_id == directive_id)
    rows = conn.execute(query.order_by(_o.id).limit(limit))
    blocked: set[tuple[str, str]] = set()
    due: list[OutboxItem] = []
    for row in rows:
        key = (row.next_hop, row.directive_id)
        if key in blocked:
            continue
        if row.next_attempt_at > now:
            blocked.add(key)
            continue
        due.append(_item(row))
    return due


# Built once: the senders ask it after every write to the node's database (node.store.NextDue).
_PENDING_HEADS = (
    select(_o.next_hop, _o.directive_id, _o.next_attempt_at).where(_o.status == OUTBOX_PENDING).order_by(_o.id)
)


def next_attempt_at(conn: Connection) -> datetime | None:
    """When the next message can go: the earliest retry time of each (hop, directive)'s oldest pending message."""
    heads: dict[tuple[str, str], datetime] = {}
    for hop, directive_id, at in conn.execute(_PENDING_HEADS):
        heads.setdefault((hop, directive_id), at)
    return min(heads.values(), default=None)


def mark_acked(conn: Connection, item_id: int, now: datetime) -> None:
    """The next hop acknowledged (stored) the message."""
    conn.execute(update(outbox_table).where(_o.id == item_id).values(status=OUTBOX_ACKED, acked_at=now, last_error=""))


def mark_failed(conn: Connection, item_id: int, error: str, retry_at: datetime) -> int:
    """Count a failed attempt and set the retry time; returns the attempts so far."""
    conn.execute(
        update(outbox_table)
        .where(_o.id == item_id)
        .values(attempts=_o.attempts + 1, last_error=error[:2000], next_attempt_at=retry_at)
    )
    return int(conn.execute(select(_o.attempts).where(_o.id == item_id)).scalar_one())


def mark_refused(conn: Connection, item_id: int, error: str) -> None:
    """The next hop refused the message: final (retrying the same bytes cannot help); operators are told."""
    conn.execute(
        update(outbox_table)
        .where(_o.id == item_id)
        .values(status=OUTBOX_REFUSED, attempts=_o.attempts + 1, last_error=error[:2000])
    )


def outbox_items(conn: Connection, directive_id: str) -> list[OutboxItem]:
    """The messages of a directive this node queued for a next hop, oldest first."""
    return [
        _item(row) for row in conn.execute(select(outbox_table).where(_o.directive_id == directive_id).order_by(_o.id))
    ]


def pending_count(conn: Connection) -> int:
    """Messages still waiting for their next hop."""
    return int(
        conn.execute(select(func.count()).select_from(outbox_table).where(_o.status == OUTBOX_PENDING)).scalar_one()
    )
