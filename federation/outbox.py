"""Durable, bounded outbox of signed reports: kept until the parent acknowledges, retried with backoff + jitter.

Every method works on a caller's Connection so that building a report and appending it to the outbox_table
are one transaction. A full outbox refuses new reports with BackPressureError (counted and logged at
ERROR) instead of dropping anything: the data behind the refused report stays in the buckets and goes
out in the next report once the parent has caught up.

``rebase`` is the recovery of a node restored from an old backup: its chain continues from the head its parent
holds (a marker row stands for that report, which only the parent still has), and a FULL report follows.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import Connection, delete, func, insert, select, update

from federation.errors import BackPressureError, IntegrityError
from federation.tables import OUTBOX_ACKED, OUTBOX_PENDING, outbox_table

# The kind of a rebase marker row: the parent's head, whose envelope this node no longer has (empty here).
REBASE_KIND = "rebased"

log = logging.getLogger(__name__)

OUTBOX_OVERFLOWS = Counter("supnet_report_outbox_overflows_total", "Reports refused because the report outbox was full")
OUTBOX_SEND_FAILURES = Counter(
    "supnet_report_outbox_send_failures_total", "Failed attempts to deliver a report to the parent"
)

# Built once: the report sender asks it after every write to the node's database (node.store.NextDue).
_OLDEST_PENDING_DUE = (
    select(outbox_table.c.next_attempt_at)
    .where(outbox_table.c.status == OUTBOX_PENDING)
    .order_by(outbox_table.c.sequence)
    .limit(1)
)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest report in the outbox: the next report chains onto it."""

    sequence: int
    digest: bytes
    up_to_revision: int


@dataclass(frozen=True, slots=True)
class AppendPoint:
    """Where the next report goes: the chain's head and how many reports wait, as read in the builder's transaction.

    ``append`` returns the point after the report it stored, so a builder appending several reports (a split one)
    reads the outbox once: only builders add reports, and they serialize (node.reporting takes the metric revision
    row first), so nothing else can move the head, and acknowledgements only lower the pending count.
    """

    head: ChainHead | None
    pending: int


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One report waiting for (or having received) the parent's acknowledgement."""

    sequence: int
    digest: bytes
    kind: str
    envelope: bytes
    attempts: int
    next_attempt_at: datetime
    up_to_revision: int
    status: str


@dataclass(slots=True)
class BackoffPolicy:
    """Exponential backoff with jitter: base·2^(attempts-1), capped, times a random factor in [0.5, 1]."""

    base_seconds: float = 1.0
    max_seconds: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempts: int) -> timedelta:
        """Delay before the next try after ``attempts`` failed ones (jitter spreads a fleet's retries)."""
        exponent = min(max(attempts - 1, 0), 32)
        ceiling = min(self.max_seconds, self.base_seconds * (2**exponent))
        return timedelta(seconds=ceiling * self.rng.uniform(0.5, 1.0))


class Outbox:
    """Operations on the ``federation_outbox`` table; stateless apart from its limits."""

    def __init__(self, *, max_pending: int, backoff: BackoffPolicy | None = None, retain_acked: int = 100) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.backoff = backoff or BackoffPolicy()
        self.retain_acked = retain_acked

    def head(self, conn: Connection) -> ChainHead | None:
        """The newest report built (acknowledged or not), or None before the first."""
        row = conn.execute(
            select(outbox_table.c.sequence, outbox_table.c.digest, outbox_table.c.up_to_revision)
            .order_by(outbox_table.c.sequence.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        return ChainHead(sequence=row.sequence, digest=bytes(row.digest), up_to_revision=row.up_to_revision)

    def pending_count(self, conn: Connection) -> int:
        """How many reports wait for an acknowledgement."""
        return int(
            conn.execute(
                select(func.count()).select_from(outbox_table).where(outbox_table.c.status == OUTBOX_PENDING)
            ).scalar_one()
        )

    def append_point(self, conn: Connection, head: ChainHead | None, node_id: str = "") -> AppendPoint:
        """The point the next report is appended at, after ``head`` (read by the caller in this transaction).

        Raises BackPressureError (counted, logged at ERROR) when no further report fits.
        """
        pending = self.pending_count(conn)
        self._refuse_when_full(pending, node_id)
        return AppendPoint(head=head, pending=pending)

    def _refuse_when_full(self, pending: int, node_id: str) -> None:
        if pending >= self.max_pending:
            OUTBOX_OVERFLOWS.inc()
            log.error(
                "report outbox of node %s is full: %s reports wait for the parent's acknowledgement (limit %s); "
                "new report refused, its data stays in the buckets for a later report",
                node_id,
                pending,
                self.max_pending,
            )
            raise BackPressureError(
                f"report outbox full: {pending} reports await acknowledgement (limit {self.max_pending})"
            )

    def append(
        self,
        conn: Connection,
        *,
        sequence: int,
        digest: bytes,
        previous_digest: bytes,
        kind: str,
        envelope: bytes,
        now: datetime,
        bucket_count: int = 0,
        base_revision: int = 0,
        up_to_revision: int = 0,
        node_id: str = "",
        at: AppendPoint | None = None,
    ) -> AppendPoint:
        """Store a freshly signed report as pending (due now); refuses when full or when it breaks the chain.

        ``at``: the append point read in this transaction (``append_point``, or what the previous ``append``
        returned), instead of reading the head and the pending count again. Returns the point after this report.
        """
        if at is None:
            at = AppendPoint(head=self.head(conn), pending=self.pending_count(conn))
        self._refuse_when_full(at.pending, node_id)
        head = at.head
        expected = 1 if head is None else head.sequence + 1
        if sequence != expected:
            raise IntegrityError(f"outbox: report sequence {sequence} does not follow {expected - 1}")
        if head is not None and previous_digest != head.digest:
            raise IntegrityError(f"outbox: report {sequence} does not chain onto the digest of report {head.sequence}")
        conn.execute(
            insert(outbox_table).values(
                sequence=sequence,
                digest=digest,
                previous_digest=previous_digest,
                kind=kind,
                envelope=envelope,
                bucket_count=bucket_count,
                base_revision=base_revision,
                up_to_revision=up_to_revision,
                status=OUTBOX_PENDING,
                attempts=0,
                next_attempt_at=now,
                last_error="",
                created_at=now,
            )
        )
        log.debug("outbox: report %s (%s, %s buckets) queued", sequence, kind, bucket_count)
        return AppendPoint(
            head=ChainHead(sequence=sequence, digest=digest, up_to_revision=up_to_revision), pending=at.pending + 1
        )

    def due(self, conn: Connection, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """Pending reports to send now, oldest first; empty while the oldest one is backing off.

        The parent applies a child's reports strictly in sequence, so nothing is sent past a report
        that is still waiting for its retry time.
        """
        rows = conn.execute(
            select(
                outbox_table.c.sequence,
                outbox_table.c.digest,
                outbox_table.c.kind,
                outbox_table.c.envelope,
                outbox_table.c.attempts,
                outbox_table.c.next_attempt_at,
                outbox_table.c.up_to_revision,
                outbox_table.c.status,
            )
            .where(outbox_table.c.status == OUTBOX_PENDING)
            .order_by(outbox_table.c.sequence)
            .limit(limit)
        ).all()
        if not rows or rows[0].next_attempt_at > now:
            return []
        return [
            OutboxEntry(
                sequence=row.sequence,
                digest=bytes(row.digest),
                kind=row.kind,
                envelope=bytes(row.envelope),
                attempts=row.attempts,
                next_attempt_at=row.next_attempt_at,
                up_to_revision=row.up_to_revision,
                status=row.status,
            )
            for row in rows
        ]

    def next_attempt_at(self, conn: Connection) -> datetime | None:
        """When the oldest pending report is due (None when nothing is pending)."""
        value: datetime | None = conn.execute(_OLDEST_PENDING_DUE).scalar_one_or_none()
        return value

    def mark_acked(self, conn: Connection, sequence: int, digest: bytes, now: datetime) -> int:
        """Record the parent's acknowledgement of ``sequence`` (and so of every earlier one); returns rows acked.

        The parent applies in order, so an ack for N covers every report before N too. An ack whose digest
        is not the one we sent is refused (and the caller's transaction rolls back): the parent holds a
        different report under our sequence.
        """
        # The write comes first so SQLite takes its write lock before reading (no stale-snapshot failure).
        result = conn.execute(
            update(outbox_table)
            .where(outbox_table.c.status == OUTBOX_PENDING, outbox_table.c.sequence <= sequence)
            .values(status=OUTBOX_ACKED, acked_at=now, last_error="")
        )
        sent = conn.execute(
            select(outbox_table.c.digest).where(outbox_table.c.sequence == sequence)
        ).scalar_one_or_none()
        if sent is None:
            raise IntegrityError(f"outbox: acknowledgement for unknown report sequence {sequence}")
        if bytes(sent) != digest:
            raise IntegrityError(
                f"outbox: parent acknowledged report {sequence} with digest {digest.hex()[:16]}…, "
                f"but this node sent {bytes(sent).hex()[:16]}…"
            )
        return int(result.rowcount)

    def mark_failed(self, conn: Connection, sequence: int, error: str, now: datetime) -> datetime:
        """Count a failed delivery and schedule the retry; returns the next attempt time."""
        OUTBOX_SEND_FAILURES.inc()
        conn.execute(
            update(outbox_table)
            .where(outbox_table.c.sequence == sequence)
            .values(attempts=outbox_table.c.attempts + 1, last_error=error[:2000])
        )
        attempts = int(
            conn.execute(select(outbox_table.c.attempts).where(outbox_table.c.sequence == sequence)).scalar_one()
        )
        next_at = now + self.backoff.delay(attempts)
        conn.execute(update(outbox_table).where(outbox_table.c.sequence == sequence).values(next_attempt_at=next_at))
        return next_at

    def rebase(self, conn: Connection, *, sequence: int, digest: bytes, now: datetime) -> int:
        """Continue the chain from the parent's head (sequence, digest); returns the reports dropped.

        Every report the parent does not hold goes: the pending ones (the parent refuses them as a rewritten
        history) and any acknowledged one past its head. Their data stays in the buckets, for the FULL report the
        caller builds next in the same transaction. When this outbox lacks the head, an acknowledged marker row
        (kind ``rebased``, no envelope) stands for it, so the next report chains onto it. Sequence 0: the parent
        holds nothing of this node, and the chain starts again at #1.
        """
        t = outbox_table.c
        stale = t.status == OUTBOX_PENDING
        if sequence:
            stale = stale | (t.sequence > sequence) | ((t.sequence == sequence) & (t.digest != digest))
        else:
            stale = t.sequence > 0
        dropped = int(conn.execute(delete(outbox_table).where(stale)).rowcount)
        if sequence and conn.execute(select(t.sequence).where(t.sequence == sequence)).first() is None:
            conn.execute(
                insert(outbox_table).values(
                    sequence=sequence,
                    digest=digest,
                    previous_digest=b"",
                    kind=REBASE_KIND,
                    envelope=b"",
                    bucket_count=0,
                    base_revision=0,
                    up_to_revision=0,
                    status=OUTBOX_ACKED,
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                    created_at=now,
                    acked_at=now,
                )
            )
        log.warning(
            "outbox: rebased onto the parent's head #%s; %s report(s) it does not hold dropped", sequence, dropped
        )
        return dropped

    def retry_now(self, conn: Connection, now: datetime) -> None:
        """Make every pending report due now (e.g. an operator knows the parent is back)."""
        conn.execute(update(outbox_table).where(outbox_table.c.status == OUTBOX_PENDING).values(next_attempt_at=now))

    def prune(self, conn: Connection) -> int:
        """Delete acknowledged reports beyond the newest ``retain_acked`` (the chain head always stays)."""
        newest = select(func.max(outbox_table.c.sequence)).scalar_subquery()
        result = conn.execute(
            delete(outbox_table).where(
                outbox_table.c.status == OUTBOX_ACKED, outbox_table.c.sequence <= newest - max(self.retain_acked, 1)
            )
        )
        return int(result.rowcount)

    def entries(self, conn: Connection, *, status: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Newest reports first (for status displays)."""
        query = select(
            outbox_table.c.sequence,
            outbox_table.c.digest,
            outbox_table.c.kind,
            outbox_table.c.envelope,
            outbox_table.c.attempts,
            outbox_table.c.next_attempt_at,
            outbox_table.c.up_to_revision,
            outbox_table.c.status,
        ).order_by(outbox_table.c.sequence.desc())
        if status is not None:
            query = query.where(outbox_table.c.status == status)
        return [
            OutboxEntry(
                sequence=row.sequence,
                digest=bytes(row.digest),
                kind=row.kind,
                envelope=bytes(row.envelope),
                attempts=row.attempts,
                next_attempt_at=row.next_attempt_at,
                up_to_revision=row.up_to_revision,
                status=row.status,
            )
            for row in conn.execute(query.limit(limit))
        ]
