"""The audit chain: hash-chained entries in the ``audit_log`` table, appended safely by concurrent writers.

``record_audit``/``record_audits`` append inside the caller's transaction (call them LAST in it: they take the chain
lock); ``AuditLog`` records in a transaction of its own, lists and verifies. Hashing is federation.audit_chain's
alone. What is recorded, the locking and what verification detects: docs/architecture.md, "Audit log".
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Engine, Select, Table, bindparam, insert, select, text
from sqlalchemy.orm import Session

from federation import (
    AuditAction,
    AuditEntry,
    AuditHead,
    AuditProblem,
    AuditResult,
    DriverConnection,
    DriverStatement,
    InvalidArgumentError,
    append,
    entry_hash,
    find_problems,
)
from node.store import ACTION_MAX, ACTOR_MAX, RESULT_MAX, AuditLogEntry

log = logging.getLogger(__name__)

audit_table = cast(Table, AuditLogEntry.__table__)
_table = audit_table
_c = _table.c

# pg_advisory_xact_lock(int4, int4): a fixed class id ("SUPN") and the schema, so tests and tenants that share
# one database but not one schema do not wait for each other.
_PG_LOCK_SQL = "SELECT pg_advisory_xact_lock(1398100046, hashtext(current_schema()))"
_PG_LOCK = text(_PG_LOCK_SQL)


class Action(AuditAction):
    """Stable action names (federation's protocol ones plus the node's administrative ones)."""

    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    ALERT_CORRECTED = "alert.corrected"
    ALERT_ESCALATED = "alert.escalated"
    COMPLAINT_ACCEPTED = "complaint.accepted"
    COMPLAINT_DECLINED = "complaint.declined"
    COMPLAINT_HANDLED = "complaint.handled"
    COMPLAINT_CONCLUDED = "complaint.concluded"
    FOLLOWUP_CLOSED = "evaluation.followup_closed"
    NOTIFICATION_RETRIED = "notification.retried"
    NODE_INITIALISED = "node.initialised"
    PKI_INGEST_CREDENTIAL = "pki.ingest_credential_issued"
    ENROLMENT_SERVED = "pki.enrolment_served"
    ENROLMENT_REFUSED = "pki.enrolment_refused"
    CERTIFICATES_RENEWED = "pki.certificates_renewed"
    PKI_CA_SIGNED_OFFLINE = "pki.ca_signed_offline"
    RECORDS_IMPORTED = "records.imported"
    RECORDS_INGESTED = "records.ingested"
    DB_UPGRADED = "db.upgraded"
    NODE_RESTORED = "node.restored"


def operator_actor(node_id: str) -> str:
    """The actor of an administrative command run on this machine: OS user @ node id."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers): still say which uid acted
        user = f"uid{os.getuid()}"
    return f"{user}@{node_id}"


def system_actor(node_id: str) -> str:
    """The actor of the node's own scheduled work."""
    return f"system@{node_id}"


def _check_sizes(actor: str, action: str, result: str) -> None:
    for name, value, limit in (
        ("actor", actor, ACTOR_MAX),
        ("action", action, ACTION_MAX),
        ("result", result, RESULT_MAX),
    ):
        if len(value) > limit:
            raise InvalidArgumentError(f"audit entry field '{name}': {len(value)} characters, at most {limit}")


def _lock_chain(conn: Connection) -> None:
    """Serialise appenders for the rest of the caller's transaction (see the module docstring)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        dbapi = conn.connection.dbapi_connection
        # pysqlite begins a transaction only at the first write; until then the head we read could be stale
        # by the time we insert. BEGIN IMMEDIATE takes the write lock now (waiting up to busy_timeout).
        if dbapi is not None and not dbapi.in_transaction:
            if not conn.in_transaction():
                conn.begin()  # so the caller's commit() covers the append (SQLAlchemy autobegins only on its own calls)
            # On the driver itself: appends ride on hot paths, and exec_driver_sql's per-call machinery costs
            # more than the statement.
            dbapi.execute("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        conn.execute(_PG_LOCK)


def _lock_driver(conn: DriverConnection) -> None:
    """_lock_chain for a transaction run on the driver alone (AuditLog.record)."""
    if conn.dialect.name == "sqlite":
        conn.dbapi.execute("BEGIN IMMEDIATE")  # a pooled connection comes back outside any transaction
    elif conn.dialect.name == "postgresql":
        cursor = conn.dbapi.cursor()  # psycopg opens the transaction at this first statement
        try:
            cursor.execute(_PG_LOCK_SQL)
        finally:
            cursor.close()


# Built once and run on the caller's DB-API cursor: an append rides on hot paths (every report a parent receives).
_HEAD = DriverStatement(select(_c.seq, _c.hash).order_by(_c.seq.desc()).limit(1))
_COLUMNS = ("seq", "at", "actor", "action", "target", "detail", "result", "prev_hash", "hash")
_INSERT = DriverStatement(insert(_table).values({name: bindparam(f"p_{name}") for name in _COLUMNS}))


def _head(conn: Connection | DriverConnection) -> AuditHead | None:
    row = _HEAD.fetch_one(conn, {})
    return None if row is None else AuditHead(int(row[0]), str(row[1]))


def _entry_params(entry: AuditEntry) -> dict[str, Any]:
    return {
        "p_seq": entry.seq,
        "p_at": entry.at.astimezone(dt.UTC).replace(tzinfo=None),
        "p_actor": entry.actor,
        "p_action": entry.action,
        "p_target": entry.target,
        "p_detail": entry.detail_json,
        "p_result": entry.result,
        "p_prev_hash": entry.prev_hash,
        "p_hash": entry.hash,
    }


def _append_locked(
    conn: Connection | DriverConnection,
    *,
    actor: str,
    action: str,
    target: str,
    detail: Mapping[str, Any] | None,
    result: str,
    at: dt.datetime,
) -> int:
    """Read the head and insert the entry after it; the caller holds the chain lock and commits."""
    entry = append(_head(conn), at=at, actor=actor, action=action, target=target, result=result, detail=detail)
    _INSERT.execute(conn, _entry_params(entry))
    log.debug("audit #%s %s %s by %s: %s", entry.seq, action, target, actor, result)
    return entry.seq


@dataclass(frozen=True, slots=True)
class PendingAuditEntry:
    """One entry for :func:`record_audits` (the fields of :func:`record_audit`)."""

    actor: str
    action: str
    target: str = ""
    detail: Mapping[str, Any] | None = None
    result: str = AuditResult.OK


def record_audits(conn: Connection, entries: Sequence[PendingAuditEntry], *, at: dt.datetime | None = None) -> int:
    """Append several entries, in order, inside the caller's transaction (call it last); returns the last seq.

    One head read and one insert for them all: a parent audits every report of a group commit this way.
    """
    for pending in entries:
        _check_sizes(pending.actor, pending.action, pending.result)
    if not entries:
        return 0
    when = at if at is not None else dt.datetime.now(dt.UTC)
    _lock_chain(conn)
    head: AuditEntry | AuditHead | None = _head(conn)
    rows = []
    for pending in entries:
        head = append(
            head,
            at=when,
            actor=pending.actor,
            action=pending.action,
            target=pending.target,
            result=pending.result,
            detail=pending.detail,
        )
        rows.append(_entry_params(head))
    _INSERT.execute_each(conn, rows)
    assert head is not None  # entries is not empty
    log.debug("audit #%s-#%s appended (%s entries)", rows[0]["p_seq"], head.seq, len(rows))
    return head.seq


def record_audit(
    conn: Connection | Session,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
    result: str = AuditResult.OK,
    at: dt.datetime | None = None,
) -> int:
    """Append one entry inside the caller's transaction (call it last); returns its seq.

    ``detail`` must be plain JSON data (InvalidArgumentError otherwise); ``at`` defaults to now (UTC).
    """
    _check_sizes(actor, action, result)  # before the flush: a refused entry writes nothing
    if isinstance(conn, Session):
        conn.flush()  # the action's own writes first, so the chain lock is held only until the commit
        conn = conn.connection()
    entry = PendingAuditEntry(actor=actor, action=action, target=target, detail=detail, result=result)
    return record_audits(conn, [entry], at=at)


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        seq=int(row.seq),
        at=row.at.replace(tzinfo=dt.UTC),
        actor=row.actor,
        action=row.action,
        target=row.target,
        detail_json=row.detail,
        result=row.result,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def parse_head(value: str) -> AuditHead:
    """Parse a remembered head written as ``SEQ:HASH`` (as ``supnet audit --verify`` prints it)."""
    seq_text, _, digest = value.partition(":")
    try:
        seq = int(seq_text)
    except ValueError:
        seq = 0
    digest = digest.strip().lower()
    if seq < 1 or len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise InvalidArgumentError(f"audit head {value!r}: expected SEQ:HASH, e.g. 42:<64 hex digits>")
    return AuditHead(seq, digest)


@dataclass(frozen=True)
class AuditFilter:
    """Which entries to list; every given field must match. ``action`` ending in ``*`` matches a prefix."""

    action: str | None = None
    actor: str | None = None
    target: str | None = None
    since: dt.datetime | None = None  # aware, or naive UTC
    until: dt.datetime | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        """The query narrowed by this filter."""
        if self.action:
            if self.action.endswith("*"):
                prefix = self.action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                query = query.where(_c.action.like(f"{prefix}%", escape="\\"))
            else:
                query = query.where(_c.action == self.action)
        if self.actor:
            query = query.where(_c.actor == self.actor)
        if self.target:
            query = query.where(_c.target == self.target)
        if self.since is not None:
            query = query.where(_c.at >= naive_utc(self.since))
        if self.until is not None:
            query = query.where(_c.at < naive_utc(self.until))
        return query


def naive_utc(value: dt.datetime) -> dt.datetime:
    """A datetime as the audit table stores it: naive UTC (aware ones converted)."""
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of verifying the whole log.

    ``first_broken_seq``: every entry before it verifies and is vouched for by its successor; ``kind`` is one of
    edited, deleted, reordered, forged, truncated, rewritten; ``reason`` says what was found there, and
    ``problems`` lists every problem seen (a tamper usually shows at more than one entry).
    """

    entries: int
    head: AuditHead | None
    first_broken_seq: int | None = None
    kind: str | None = None
    reason: str = ""
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when the chain verifies."""
        return self.first_broken_seq is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash},
            "first_broken_seq": self.first_broken_seq,
            "kind": self.kind,
            "reason": self.reason,
            "problems": list(self.problems),
        }


_MAX_PROBLEMS = 100  # a wholesale rewrite shows at every entry; the first ones say enough


class AuditLog:
    """The audit log of one node database: append in own transactions, list, verify."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        detail: Mapping[str, Any] | None = None,
        result: str = AuditResult.OK,
        at: dt.datetime | None = None,
    ) -> int:
        """record_audit in a transaction of its own, committed before it returns; returns the entry's seq.

        Runs on the pooled driver connection alone: every drill-down hop appends one entry before it answers,
        and SQLAlchemy's connection and transaction bookkeeping cost more than the append's statements.
        """
        _check_sizes(actor, action, result)
        when = at if at is not None else dt.datetime.now(dt.UTC)
        raw = self._engine.raw_connection()
        try:
            conn = DriverConnection(raw.dbapi_connection, self._engine.dialect)
            _lock_driver(conn)
            seq = _append_locked(conn, actor=actor, action=action, target=target, detail=detail, result=result, at=when)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
        return seq

    def head(self) -> AuditHead | None:
        """The last entry as (seq, hash), None for an empty log."""
        with self._engine.connect() as conn:
            return _head(conn)

    def entries(self, filters: AuditFilter | None = None, limit: int | None = 100) -> list[AuditEntry]:
        """Entries matching ``filters``, newest first, at most ``limit`` (None: all)."""
        query = (filters or AuditFilter()).apply(select(_table)).order_by(_c.seq.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            return [_entry(row) for row in conn.execute(query)]

    def _stream(self, conn: Connection) -> Iterator[AuditEntry]:
        rows = conn.execution_options(yield_per=2000).execute(select(_table).order_by(_c.seq))
        for row in rows:
            yield _entry(row)

    def verify(self, *, remembered_head: AuditHead | None = None) -> VerifyResult:
        """Recompute every hash and link in seq order; the result names the first broken seq and why."""
        counted = 0
        last: AuditEntry | None = None

        def counting(entries: Iterator[AuditEntry]) -> Iterator[AuditEntry]:
            nonlocal counted, last
            for entry in entries:
                counted += 1
                last = entry
                yield entry

        kind: str | None = None
        seq: int | None = None
        reason = ""
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the walk and the diagnosis, while appenders go on.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                problems = find_problems(counting(self._stream(conn)), remembered_head=remembered_head)
                if problems:
                    kind, seq, reason = self._diagnose(conn, problems[0], *self._context(conn, problems[0]))
        head = None if last is None else last.head
        messages = tuple(problem.message for problem in problems[:_MAX_PROBLEMS])
        if len(problems) > _MAX_PROBLEMS:
            messages += (f"... and {len(problems) - _MAX_PROBLEMS} more",)
        if kind is not None:
            log.warning("audit log broken at #%s (%s): %s", seq, kind, reason)
        return VerifyResult(
            entries=counted, head=head, first_broken_seq=seq, kind=kind, reason=reason, problems=messages
        )

    def _context(self, conn: Connection, problem: AuditProblem) -> tuple[AuditEntry | None, AuditEntry | None]:
        """(the stored entry before the problem's position, the entry at it)."""
        before = conn.execute(select(_table).where(_c.seq < problem.seq).order_by(_c.seq.desc()).limit(1)).first()
        at = conn.execute(select(_table).where(_c.seq >= problem.seq).order_by(_c.seq).limit(1)).first()
        return (None if before is None else _entry(before)), (None if at is None else _entry(at))

    def _diagnose(
        self, conn: Connection, problem: AuditProblem, before: AuditEntry | None, entry: AuditEntry | None
    ) -> tuple[str, int, str]:
        """(kind, first broken seq, reason) for the first problem, refined with lookups across the whole log."""
        if problem.kind in ("deleted", "truncated", "rewritten", "out_of_order") or entry is None:
            kind = "reordered" if problem.kind == "out_of_order" else problem.kind
            return kind, problem.seq, problem.message
        expected_prev = before.hash if before is not None else AuditHead(0, "0" * 64).hash
        linked_ok = entry.prev_hash == expected_prev
        if not linked_ok:
            # Does this entry link to, or did it come after, an entry that stands elsewhere in the log?
            elsewhere = conn.execute(
                select(_c.seq).where(_c.hash == entry.prev_hash, _c.seq != entry.seq).limit(1)
            ).scalar_one_or_none()
            if elsewhere is not None:
                return (
                    "reordered",
                    entry.seq,
                    f"entry #{entry.seq} was chained after the entry now at #{elsewhere}, not after "
                    f"#{entry.seq - 1}: entries were moved",
                )
        if entry_hash(entry) != entry.hash:
            return (
                "edited",
                entry.seq,
                f"entry #{entry.seq}: its content does not match its hash (the row was edited, or its hash "
                "overwritten)",
            )
        if before is None:  # the first entry is self-consistent but does not start the chain
            return "forged", entry.seq, f"entry #{entry.seq} does not start the chain: its prev_hash is not genesis"
        witness = conn.execute(
            select(_c.seq).where(_c.prev_hash == before.hash, _c.seq != entry.seq).limit(1)
        ).scalar_one_or_none()
        if witness is not None:
            return (
                "reordered",
                entry.seq,
                f"entry #{witness} was chained directly after #{before.seq}, but #{entry.seq} stands there: "
                "entries were moved and re-hashed",
            )
        return (
            "forged",
            before.seq,
            f"entry #{entry.seq} was chained to hash {entry.prev_hash[:12]}, but #{before.seq} now hashes to "
            f"{before.hash[:12]}: #{before.seq} was rewritten and its hash recomputed (or #{entry.seq}'s link was)",
        )
