"""The node's hash-chained audit log table (rows written only through node.audit_log.record_audit)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from node.store.models import Base

# Column sizes, checked by record_audit before writing so a long value is refused clearly, never cut.
ACTOR_MAX = 200
ACTION_MAX = 64
RESULT_MAX = 32


class AuditLogEntry(Base):
    """One audit entry; ``hash`` is SHA-256 over the canonical bytes of every other column (federation.audit_chain).

    Unlike the other tables, ``at`` is UTC (naive, microseconds): the hash covers it as UTC ISO 8601, and an
    audit trail must not move when the node's time zone setting does.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False, comment="position in the chain: 1, 2, 3 … without gaps"
    )
    at: Mapped[datetime] = mapped_column(DateTime, comment="when, UTC (naive, microseconds)")
    actor: Mapped[str] = mapped_column(
        String(ACTOR_MAX), comment="who: a node id, an operator as user@node, or system@node"
    )
    action: Mapped[str] = mapped_column(String(ACTION_MAX), comment="what, e.g. report.accepted, alert.acknowledged")
    target: Mapped[str] = mapped_column(Text, comment="on what: a node id, alert:17, complaint:TS-1 …")
    detail: Mapped[str] = mapped_column(
        Text, comment="canonical JSON object (sorted keys, no spaces), hashed exactly as stored"
    )
    result: Mapped[str] = mapped_column(String(RESULT_MAX), comment="ok | refused | error")
    prev_hash: Mapped[str] = mapped_column(String(64), comment="hash of entry seq - 1 (64 zeros for entry 1)")
    hash: Mapped[str] = mapped_column(String(64), comment="hex SHA-256 over this entry's canonical bytes")

    __table_args__ = (
        Index("ix_audit_log_action_seq", "action", "seq"),
        Index("ix_audit_log_actor_seq", "actor", "seq"),
        Index("ix_audit_log_at", "at"),
    )
