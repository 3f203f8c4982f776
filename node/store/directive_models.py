"""Directive tables (docs/domain.md §8): directives held here, their signed events, and the directive outbox.

``directives`` keeps one row per directive this node issued, received (as target or, for a whole-subtree bulletin,
as a node of the target's subtree), relayed, or had escalated to it, with the signed envelope as it arrived and this
node's view of its state; ``directive_events`` every signed event of its life seen here; ``directive_outbox`` what
this node must still hand to the next hop (parent or child), kept until that hop acknowledges it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from node.store.models import Base

DIRECTIVE_ID_MAX = 160
NODE_ID_MAX = 200


class Directive(Base):
    """A directive as this node holds it: who issued it to whom, the signed envelope, and its state as seen here."""

    __tablename__ = "directives"

    id: Mapped[str] = mapped_column(String(DIRECTIVE_ID_MAX), primary_key=True, comment="<issuer>/<YYYYMMDD>-<hex>")
    role: Mapped[str] = mapped_column(
        String(10), index=True, comment="issued | received | relayed | escalated: this node's part in it"
    )
    kind: Mapped[str] = mapped_column(String(10), comment="supervise | warning | rectify | bulletin")
    issuer_id: Mapped[str] = mapped_column(String(NODE_ID_MAX))
    issued_by: Mapped[str] = mapped_column(String(100), default="", comment="the issuing official")
    target_id: Mapped[str] = mapped_column(String(NODE_ID_MAX), index=True)
    whole_subtree: Mapped[bool] = mapped_column(Boolean, default=False)
    subject_kind: Mapped[str] = mapped_column(String(10), default="", comment="case | department | item | ''")
    subject: Mapped[str] = mapped_column(String(200), default="")
    respond_within_workdays: Mapped[int] = mapped_column(Integer, default=0)
    issued_at: Mapped[datetime] = mapped_column(DateTime, comment="when the issuer signed it (node-local time)")
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), comment="SHA-256 over the envelope's canonical bytes")
    envelope: Mapped[bytes] = mapped_column(LargeBinary, comment="the SignedEnvelope exactly as signed")
    status: Mapped[str] = mapped_column(
        String(12),
        index=True,
        comment="issued | delivered | acknowledged | responded | reopened | closed | escalated (as seen here)",
    )
    received_from: Mapped[str] = mapped_column(String(NODE_ID_MAX), default="", comment="the TLS caller; '' if own")
    stored_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    responded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    due_at: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, index=True, comment="response due (the target's calendar, signed on delivery)"
    )
    escalate_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    on_time_counted: Mapped[bool] = mapped_column(
        Boolean, default=False, comment="target: directives_responded_on_time counted (once per directive)"
    )
    overdue_marked_at: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, comment="when this node acted on the late response (alert or notice), once"
    )
    escalation_marked_at: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, comment="when this node escalated the late response, once"
    )


class DirectiveEvent(Base):
    """One signed event of a directive's life as it reached (or was made at) this node."""

    __tablename__ = "directive_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    directive_id: Mapped[str] = mapped_column(String(DIRECTIVE_ID_MAX), index=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), comment="SHA-256 over the envelope's canonical bytes")
    kind: Mapped[str] = mapped_column(
        String(12), comment="delivered | acknowledged | responded | closed | reopened | escalated"
    )
    actor_id: Mapped[str] = mapped_column(String(NODE_ID_MAX), comment="the signing node")
    actor_person: Mapped[str] = mapped_column(String(100), default="")
    at: Mapped[datetime] = mapped_column(DateTime, comment="when the actor made it (node-local time)")
    envelope: Mapped[bytes] = mapped_column(LargeBinary, comment="the SignedEnvelope exactly as signed")
    received_from: Mapped[str] = mapped_column(String(NODE_ID_MAX), default="", comment="the TLS caller; '' if own")
    stored_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (UniqueConstraint("directive_id", "digest"),)


class DirectiveOutboxEntry(Base):
    """A signed directive message for the next hop, kept until that hop acknowledges it (at least once)."""

    __tablename__ = "directive_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    directive_id: Mapped[str] = mapped_column(String(DIRECTIVE_ID_MAX), index=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    message: Mapped[str] = mapped_column(String(12), comment="directive | delivered | acknowledged | ...")
    next_hop: Mapped[str] = mapped_column(String(NODE_ID_MAX), comment="the parent or child it goes to")
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(8), default="pending", comment="pending | acked | refused")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("digest", "next_hop"),
        Index("ix_directive_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )
