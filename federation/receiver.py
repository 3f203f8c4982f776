"""Receiving children's reports: verify, check registration and chain, de-duplicate, store + apply, then ack.

Order of checks (each refusal is a precise SupnetError, mapped to a gRPC status by federation.grpc_errors):

1. the signer is a registered child               else PermissionDeniedError  -> PERMISSION_DENIED
2. the signature verifies with the child's key    else UnauthenticatedError   -> UNAUTHENTICATED
3. the body parses, is canonical, names the signer else InvalidArgumentError / PermissionDeniedError
4. (child, sequence) already stored:
   same digest  -> the same acknowledgement again (idempotent re-delivery, nothing applied twice)
   other digest -> HistoryRewrittenError (code HISTORY_REWRITTEN)      -> ALREADY_EXISTS
                   the child's chain rewound (restored from a backup): its operator resyncs
5. the chain: sequence = last + 1 and previous_digest = last digest
   at or below the last -> StaleError (ALREADY_EXISTS); a gap or a wrong previous digest -> IntegrityError
   (FAILED_PRECONDITION), so the child resends in order (its outbox sends oldest first); then the date: a report
   dated beyond the clock tolerance ahead of this node's clock -> ClockSkewError (FAILED_PRECONDITION), naming
   the skew (only a report from the future can be told from a late one: a backlog is legitimately old)
6. store the report, advance the chain head and apply its buckets in ONE transaction; only after the
   commit is the acknowledgement returned, so a child never holds an ack for a report that is not stored.

Checks 1-3 run in the caller's thread. Checks 4-6 run by GROUP COMMIT: each caller queues its verified report;
the first to find no batch running leads: it takes up to MAX_BATCH queued reports in arrival order and stores
them in one transaction, commits once, then hands every caller its own ack or error and passes the lead to the
oldest caller still queued. One commit and one lock hand-off per batch instead of per report is what lets a
province keep up with its children: with a thread per report, they queued on the single write lock.

A batch is stored set-based: the chain heads of its children are read once, each report is checked against
its child's head in memory (a later report of the same child sees the earlier one's), and the reports that
extend their chains go in with one statement per table; re-deliveries are then answered from their stored
rows. If that fails (a failed apply, a row the heads did not predict), the transaction is rolled back and the
batch is stored again report by report, each inside a SAVEPOINT of its own, so a failure rolls back only the
report that caused it. Both ways decide every report exactly alike.

An optional ``audit`` hook (node.audit_log.ReceiptAuditor) records each accepted report inside that same
transaction, and each refusal (any SupnetError above) in a transaction of its own before it is raised, naming
the verified caller the server passes to ``receive`` (not the signer the envelope claims).
A refusal is audited after its batch has committed. A re-delivery acknowledged again is neither: nothing is
stored or changed. A database that is full fails the whole batch with StorageFullError (UNAVAILABLE, retryable):
nothing of it is stored, and the children resend once space is freed.

This module is one unit: the checks, the group commit and both ways of storing must decide every report alike,
so they are read together.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import BindParameter, Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from federation.canonical import parse_body, require_canonical_encoding, validate_report_body
from federation.chain import ChainHead, check_chain, report_digest, short_hex
from federation.crash_points import crash_point
from federation.errors import (
    ClockSkewError,
    HistoryRewrittenError,
    IntegrityError,
    PermissionDeniedError,
    StaleError,
    StorageFullError,
    SupnetError,
    UnauthenticatedError,
    is_storage_full,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportAck, ReportBody, ReportKind
from federation.signing import KeyResolver, verify_with_resolver
from federation.tables import DriverStatement, child_chains, driver_integrity_error, received_reports

log = logging.getLogger(__name__)

KIND_NAMES = {ReportKind.REPORT_KIND_INCREMENTAL: "incremental", ReportKind.REPORT_KIND_FULL: "full"}


@dataclass(frozen=True, slots=True)
class AcceptedReport:
    """A verified, chain-checked report about to be stored (what the apply callback sees)."""

    child_id: str
    body: ReportBody
    envelope: SignedEnvelope
    digest: bytes
    received_at: datetime

    @property
    def kind(self) -> str:
        """'incremental' or 'full'."""
        return KIND_NAMES[self.body.kind]

    @property
    def changes_figures(self) -> bool:
        """Applying it changes the parent's figures (a heartbeat, an incremental report naming none, does not).

        It names buckets or activity counts, or is FULL (which also zeroes what its window does not name).
        """
        body = self.body
        return bool(body.buckets) or bool(body.activity) or body.kind == ReportKind.REPORT_KIND_FULL


@dataclass(frozen=True, slots=True)
class ChildChainState:
    """What the parent knows of one child: chain head, when it last reported, its completeness counts."""

    child_id: str
    last_sequence: int
    last_digest: bytes
    last_received_at: datetime
    last_created_at_ms: int
    nodes_in_subtree: int
    nodes_reported_in_window: int


# Called with reports about to be stored, in order, inside their storing transaction: a whole group commit's
# at once, or a single report when a batch is stored report by report.
ApplyReports = Callable[[Connection, Sequence[AcceptedReport]], None]


class ReceiptAudit(Protocol):
    """Where a receiver records what it accepted and refused (federation does not know the audit table)."""

    def accepted_many(self, conn: Connection, reports: Sequence[AcceptedReport]) -> None:
        """Record reports being stored, in order, inside their storing transaction (the last statements)."""

    def refused(self, envelope: SignedEnvelope, error: SupnetError, caller: str) -> None:
        """Record a refused report, in a transaction of its own; ``caller``: who sent it, as verified ('' unknown)."""


class _AlreadyStoredError(Exception):
    """Internal signal: the log already holds this (child, sequence)."""


class _BatchNotTogetherError(Exception):
    """Internal signal: storing a batch together failed (its cause says why); store it one by one instead."""


# Reports stored per transaction at most: bounds how long one batch holds the write lock (and its callers).
MAX_BATCH = 64
# How far ahead of this node's clock a child's report may be dated (the drill-down queries' freshness window
# tolerates the same skew, node.trust.FRESHNESS_WINDOW_SECONDS).
MAX_CLOCK_SKEW_SECONDS = 900.0


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True, eq=False)
class _Delivery:
    """A verified report queued for the next group commit, and what that commit made of it."""

    envelope: SignedEnvelope
    body: ReportBody
    digest: bytes
    # Released exactly once, by the leader that decided this delivery or promoted it to lead: a bare lock wakes
    # its waiter with less work than an Event (a Condition underneath) on a path taken for every report.
    wake: threading.Lock = field(default_factory=_held_lock)
    lead: bool = False  # woken to lead the next batch, not with an outcome
    ack: ReportAck | None = None
    error: BaseException | None = None
    accepted: AcceptedReport | None = None


# The hot path of a receive runs through statements compiled once (DriverStatement): fan-in is per report.
_CHAIN_HEAD = select(child_chains.c.last_sequence, child_chains.c.last_digest).where(
    child_chains.c.child_id == bindparam("chain_child")
)
# PostgreSQL: lock the child's head row so two deliveries of one child cannot both extend it (SQLite already
# holds its single write lock here and renders no FOR UPDATE).
_CHAIN_HEAD_FOR_UPDATE = DriverStatement(_CHAIN_HEAD.with_for_update())


@functools.cache
def _chain_heads_statement(count: int) -> DriverStatement:
    """The heads of ``count`` children (binds child_0 ...) in one read, compiled once per count (<= MAX_BATCH).

    Ordered, so two transactions lock PostgreSQL rows in the same order.
    """
    wanted: list[BindParameter[str]] = [bindparam(f"child_{number}") for number in range(count)]
    return DriverStatement(
        select(child_chains.c.child_id, child_chains.c.last_sequence, child_chains.c.last_digest)
        .where(child_chains.c.child_id.in_(wanted))
        .order_by(child_chains.c.child_id)
        .with_for_update()
    )


_STORED_DIGEST = select(received_reports.c.digest).where(
    received_reports.c.child_id == bindparam("chain_child"),
    received_reports.c.sequence == bindparam("stored_sequence"),
)
_RECEIVED_COLUMNS = ("child_id", "sequence", "digest", "kind", "envelope", "bucket_count", "received_at")
_CHAIN_COLUMNS = (
    "last_sequence",
    "last_digest",
    "last_received_at",
    "last_created_at_ms",
    "nodes_in_subtree",
    "nodes_reported_in_window",
)
# Bind names differ from column names: SQLAlchemy reserves column names in VALUES/SET for itself.
_INSERT_RECEIVED = DriverStatement(
    insert(received_reports).values({name: bindparam(f"p_{name}") for name in _RECEIVED_COLUMNS})
)
_INSERT_CHAIN = DriverStatement(
    insert(child_chains).values({name: bindparam(f"p_{name}") for name in ("child_id", *_CHAIN_COLUMNS)})
)
_UPDATE_CHAIN = DriverStatement(
    update(child_chains)
    .where(child_chains.c.child_id == bindparam("p_child_id"))
    .values({name: bindparam(f"p_{name}") for name in _CHAIN_COLUMNS})
)


@contextmanager
def _savepoint(cursor: Any) -> Iterator[None]:
    """One report's SAVEPOINT on the batch's DB-API cursor: released on success, rolled back on any error.

    Plain SQL on the driver, like the DriverStatements inside it: SQLAlchemy's begin_nested costs more per report
    than the statements. One name serves every report, as each savepoint is gone before the next one starts.
    """
    cursor.execute("SAVEPOINT report")
    try:
        yield
    except BaseException:
        cursor.execute("ROLLBACK TO SAVEPOINT report")
        cursor.execute("RELEASE SAVEPOINT report")
        raise
    cursor.execute("RELEASE SAVEPOINT report")


def _prefixed(values: dict[str, object]) -> dict[str, object]:
    return {f"p_{name}": value for name, value in values.items()}


def load_child_chains(conn: Connection) -> dict[str, ChildChainState]:
    """Every child's chain state, by child id."""
    rows = conn.execute(select(child_chains)).all()
    return {
        row.child_id: ChildChainState(
            child_id=row.child_id,
            last_sequence=row.last_sequence,
            last_digest=bytes(row.last_digest),
            last_received_at=row.last_received_at,
            last_created_at_ms=row.last_created_at_ms,
            nodes_in_subtree=row.nodes_in_subtree,
            nodes_reported_in_window=row.nodes_reported_in_window,
        )
        for row in rows
    }


class ReportReceiver:
    """Accepts signed reports from registered children into the node's database (thread-safe)."""

    def __init__(
        self,
        engine: Engine,
        *,
        children: Collection[str] | Callable[[], Collection[str]],
        key_resolver: KeyResolver,
        apply: ApplyReports,
        clock: Callable[[], datetime],
        node_id: str = "",
        accept_first_at_any_sequence: bool = False,
        audit: ReceiptAudit | None = None,
        unix_clock_ms: Callable[[], int] | None = None,
        max_clock_skew_seconds: float = MAX_CLOCK_SKEW_SECONDS,
    ) -> None:
        """``unix_clock_ms``: this node's clock as Unix ms, to refuse reports dated beyond the skew tolerance."""
        self._engine = engine
        self._unix_clock_ms = unix_clock_ms
        self._max_skew_ms = int(max_clock_skew_seconds * 1000)
        self._audit = audit
        self._children = children
        self._key_resolver = key_resolver
        self._apply = apply
        self._clock = clock
        self._node_id = node_id
        # Off by default: accepting a child's first report at any sequence would let an out-of-order #3 in
        # first and strand #1 and #2 as stale. Only for a child joining with history (re-homed child, parent
        # database rebuilt), where #1 no longer exists in the child's outbox.
        self._accept_first_at_any_sequence = accept_first_at_any_sequence
        self._queue: list[_Delivery] = []
        self._queue_guard = threading.Lock()
        self._leading = False  # a batch is running or its successor is being woken (guarded by _queue_guard)

    def _registered(self) -> Collection[str]:
        return self._children() if callable(self._children) else self._children

    def verify(self, envelope: SignedEnvelope) -> tuple[ReportBody, bytes]:
        """Checks 1-3: registered child, signature, well-formed body naming its signer; returns (body, digest)."""
        signer = envelope.signer_id
        if signer not in self._registered():
            raise PermissionDeniedError(
                f"unknown child {signer or '(empty signer_id)'!r}: not a registered child of node {self._node_id}"
            )
        # A resolver reading keys from certificate chains (a node's CertificateKeyResolver) is bound to
        # this envelope's own chain; a static one (config keys) answers by (signer, key id).
        bind = getattr(self._key_resolver, "for_envelope", None)
        resolver: KeyResolver = bind(envelope) if callable(bind) else self._key_resolver
        try:
            verify_with_resolver(envelope, resolver)
        except IntegrityError as error:
            raise UnauthenticatedError(f"bad signature on report from {signer}: {error}") from error
        body = parse_body(envelope, ReportBody)
        require_canonical_encoding(envelope, body)
        if body.node_id != signer:
            raise PermissionDeniedError(f"report signed by {signer} claims to come from {body.node_id or '(empty)'}")
        validate_report_body(body)
        return body, report_digest(envelope)

    def _check_clock(self, body: ReportBody) -> None:
        """ClockSkewError for a report dated further ahead of this node's clock than the tolerance."""
        if self._unix_clock_ms is None or not body.created_at_ms:
            return
        ahead_ms = body.created_at_ms - self._unix_clock_ms()
        if ahead_ms > self._max_skew_ms:
            raise ClockSkewError(
                f"report {body.node_id} #{body.sequence} is dated {ahead_ms / 1000:.0f} s ahead of the clock of "
                f"{self._node_id or 'this node'}: clock skew of {ahead_ms / 60000:+.1f} min exceeds the tolerance "
                f"of ±{self._max_skew_ms / 60000:.0f} min; check the clocks (NTP) of {body.node_id} and "
                f"{self._node_id or 'its parent'}"
            )

    def receive(self, envelope: SignedEnvelope, caller: str = "") -> ReportAck:
        """Verify, de-duplicate, store and apply one report; the returned ack means it is durably stored.

        ``caller``: who sent it as the server verified it (its TLS peer), for the audit of a refusal.
        """
        return self.receive_accepted(envelope, caller)[0]

    def receive_accepted(self, envelope: SignedEnvelope, caller: str = "") -> tuple[ReportAck, AcceptedReport | None]:
        """``receive``, also returning the report as stored (None for a re-delivery, already stored before)."""
        try:
            body, digest = self.verify(envelope)
            delivery = self._deliver(_Delivery(envelope=envelope, body=body, digest=digest))
            if delivery.error is not None:
                raise delivery.error
            assert delivery.ack is not None  # a finished delivery holds an ack or an error
            return delivery.ack, delivery.accepted if delivery.ack.stored else None
        except SupnetError as error:
            self.audit_refusal(envelope, error, caller)
            raise

    @property
    def queued(self) -> int:
        """Verified reports waiting for the next group commit (for monitoring and tests)."""
        with self._queue_guard:
            return len(self._queue)

    def _deliver(self, delivery: _Delivery) -> _Delivery:
        """Queue a verified report and return it once a group commit has decided it (ack or error)."""
        with self._queue_guard:
            self._queue.append(delivery)
            lead = not self._leading
            self._leading = True
        if not lead:
            delivery.wake.acquire()
            lead = delivery.lead
        if lead:
            self._lead(delivery)
        return delivery

    def _lead(self, own: _Delivery) -> None:
        with self._queue_guard:
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
        # A leader's own delivery is the oldest queued (the queue was empty, or it was promoted as the oldest),
        # so this batch holds it.
        try:
            self._commit_batch(batch)
        finally:
            with self._queue_guard:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leading = False
                else:
                    successor.lead = True
            # The successor first: the next batch's commit is what the queued callers wait for.
            if successor is not None:
                successor.wake.release()
            for delivery in batch:
                if delivery is not own:
                    delivery.wake.release()

    def _commit_batch(self, batch: list[_Delivery]) -> None:
        """Store a batch in one transaction and decide every delivery (ack or error).

        First set-based: the chain is checked in memory against the heads read once, and the reports that
        extend it are stored with one statement per table. Should that fail (a failed apply, a row the heads
        did not predict), nothing of it is kept and the batch is stored again report by report, each in a
        savepoint of its own, so the failure stays with the report that caused it.
        """
        try:
            self._decide(batch, self._store_together)
        except _BatchNotTogetherError as error:
            log.info("batch of %s reports stored report by report after: %s", len(batch), error.__cause__)
            for delivery in batch:
                delivery.ack, delivery.error, delivery.accepted = None, None, None
            self._decide(batch, self._store_one_by_one)

    def _decide(self, batch: list[_Delivery], store: Callable[[Connection, Any, list[_Delivery]], None]) -> None:
        """Run ``store`` in one transaction; on a failed commit every delivery gets the error, none an ack."""
        try:
            with self._engine.begin() as conn, closing(conn.connection.dbapi_connection.cursor()) as cursor:  # type: ignore[union-attr]
                if conn.dialect.name == "sqlite":
                    # pysqlite begins a transaction only at the first write, so the first SAVEPOINT would start
                    # (and its RELEASE commit) one of its own. BEGIN IMMEDIATE also takes the write lock now.
                    cursor.execute("BEGIN IMMEDIATE")
                store(conn, cursor, batch)
                crash_point("receive.applied")
        except _BatchNotTogetherError as error:
            if is_storage_full(error):
                self._fail_full(batch, error)  # one by one would fill up alike
                return
            raise  # rolled back: the caller stores the batch one by one
        except BaseException as error:
            if isinstance(error, Exception) and is_storage_full(error):
                self._fail_full(batch, error)
                return
            # No commit, so nothing of this batch is stored: every caller gets the error, none an ack (a
            # duplicate answered against a batch-mate's row would be wrong now too).
            for delivery in batch:
                delivery.ack, delivery.error, delivery.accepted = None, error, None
            if not isinstance(error, Exception):
                raise
            return
        crash_point("receive.committed")
        for delivery in batch:
            accepted = delivery.accepted
            if accepted is not None and delivery.error is None:
                log.info(
                    "stored report %s #%s (%s, %s buckets, digest %s)",
                    accepted.child_id,
                    accepted.body.sequence,
                    accepted.kind,
                    len(accepted.body.buckets),
                    short_hex(accepted.digest),
                )

    def _fail_full(self, batch: list[_Delivery], cause: BaseException) -> None:
        """The database is full: nothing of the batch is stored; every caller gets the retryable StorageFullError."""
        log.error("node %s cannot store %s report(s): database or disk full (%s)", self._node_id, len(batch), cause)
        for delivery in batch:
            delivery.ack, delivery.accepted = None, None
            delivery.error = self._full_error(delivery)

    def _full_error(self, delivery: _Delivery) -> StorageFullError:
        return StorageFullError(
            f"node {self._node_id or '(parent)'} cannot store report {delivery.body.node_id} "
            f"#{delivery.body.sequence}: its database or disk is full; nothing was stored, resend later "
            f"(its operators must free space)"
        )

    def _store_together(self, conn: Connection, cursor: Any, batch: list[_Delivery]) -> None:
        """Checks 4-6 for a whole batch with one statement per table (see _commit_batch)."""
        heads = self._chain_heads(conn, {delivery.body.node_id for delivery in batch})
        known = set(heads)  # children with a head row (UPDATE) rather than none yet (INSERT)
        extending: list[_Delivery] = []
        already_there: list[_Delivery] = []
        for delivery in batch:
            body = delivery.body
            head = heads.get(body.node_id)
            if head is not None and body.sequence <= head.sequence:
                # A re-delivery or a rewrite of a stored report (maybe of a batch-mate): decided on its stored row
                # below, once the batch's rows are in, exactly as one by one.
                already_there.append(delivery)
                continue
            try:
                self._check_chain(head, body)
            except SupnetError as error:
                delivery.error = error
                continue
            heads[body.node_id] = ChainHead(body.sequence, delivery.digest)
            extending.append(delivery)
        try:
            if extending:
                self._store_extending(conn, extending, known)
        except Exception as error:
            raise _BatchNotTogetherError from error
        for delivery in already_there:
            self._store_in_savepoint(conn, cursor, delivery)

    def _store_extending(self, conn: Connection, extending: list[_Delivery], known: set[str]) -> None:
        """Store reports that extend their chains: log rows, chain heads, apply, audit."""
        received_rows, accepted_reports = [], []
        latest: dict[str, AcceptedReport] = {}
        for delivery in extending:
            body = delivery.body
            delivery.accepted = accepted = AcceptedReport(
                child_id=body.node_id,
                body=body,
                envelope=delivery.envelope,
                digest=delivery.digest,
                received_at=self._clock(),
            )
            accepted_reports.append(accepted)
            received_rows.append(_prefixed(_received_values(accepted)))
            if body.sequence != 1 and body.node_id not in known and body.node_id not in latest:
                log.warning("first report from child %s starts at #%s (chain joined late)", body.node_id, body.sequence)
            latest[body.node_id] = accepted
        _INSERT_RECEIVED.execute_each(conn, received_rows)
        chain_rows = {child: _prefixed(_chain_values(accepted)) for child, accepted in latest.items()}
        _INSERT_CHAIN.execute_each(conn, [row for child, row in chain_rows.items() if child not in known])
        _UPDATE_CHAIN.execute_each(conn, [row for child, row in chain_rows.items() if child in known])
        self._apply(conn, accepted_reports)
        if self._audit is not None:
            self._audit.accepted_many(conn, accepted_reports)  # commits with the reports, or not at all
        for delivery in extending:
            delivery.ack = _stored_ack(delivery)

    def _chain_heads(self, conn: Connection, children: Collection[str]) -> dict[str, ChainHead]:
        """The chain heads of these children that have one (PostgreSQL: their rows locked, in one order)."""
        rows = _chain_heads_statement(len(children)).fetch_all(
            conn, {f"child_{number}": child for number, child in enumerate(sorted(children))}
        )
        return {str(row[0]): ChainHead(int(row[1]), bytes(row[2])) for row in rows}

    def _check_chain(self, head: ChainHead | None, body: ReportBody) -> None:
        check_chain(head, body, accept_first_at_any_sequence=self._accept_first_at_any_sequence)
        # Only a report that would extend the chain: a re-delivery is acknowledged whatever the clocks say.
        self._check_clock(body)

    def _store_one_by_one(self, conn: Connection, cursor: Any, batch: list[_Delivery]) -> None:
        """Checks 4-6 report by report, each in a savepoint of its own (see _commit_batch)."""
        for delivery in batch:
            self._store_in_savepoint(conn, cursor, delivery)

    def _store_in_savepoint(self, conn: Connection, cursor: Any, delivery: _Delivery) -> None:
        try:
            with _savepoint(cursor):
                delivery.accepted = self._store(conn, delivery)
            delivery.ack = _stored_ack(delivery)
        except _AlreadyStoredError:
            # (child, sequence) is stored (maybe by a batch-mate): a re-delivery or a rewritten report.
            try:
                delivery.ack = self._answer_duplicate(conn, delivery.body, delivery.digest)
            except SupnetError as error:
                delivery.error = error
        except Exception as error:
            # A refusal (SupnetError) or a failed apply is this report's alone: its savepoint is gone.
            delivery.accepted = None
            delivery.error = self._full_error(delivery) if is_storage_full(error) else error

    def audit_refusal(self, envelope: SignedEnvelope, error: SupnetError, caller: str = "") -> None:
        """Record a refusal through the audit hook (also for refusals decided before ``receive``, e.g. by mTLS)."""
        if self._audit is None:
            return
        try:
            self._audit.refused(envelope, error, caller)
        except Exception:
            # The refusal itself must still reach the child; a broken audit store is logged, not masked.
            log.exception("could not audit refused report from %s (%s)", envelope.signer_id, error.code)

    def _answer_duplicate(self, conn: Connection, body: ReportBody, digest: bytes) -> ReportAck:
        child_id = body.node_id
        stored_digest = conn.execute(
            _STORED_DIGEST, {"chain_child": child_id, "stored_sequence": body.sequence}
        ).scalar_one_or_none()
        last_sequence = conn.execute(_CHAIN_HEAD, {"chain_child": child_id}).first()
        if stored_digest is None:  # the conflicting row went away (cannot happen without manual deletes)
            raise StaleError(f"report {child_id} #{body.sequence} conflicts with a stored report; resend later")
        if bytes(stored_digest) != digest:
            held = last_sequence.last_sequence if last_sequence is not None else body.sequence
            raise HistoryRewrittenError(
                f"report {child_id} #{body.sequence} was already received with digest "
                f"{short_hex(bytes(stored_digest))}; this one has digest {short_hex(digest)}: history rewritten "
                f"(restored from a backup?); {self._node_id or 'the parent'} holds {child_id}'s reports up to "
                f"#{held}: run 'supnet reports resync' on {child_id} to continue from there"
            )
        log.debug("report %s #%s re-delivered; acknowledging again", child_id, body.sequence)
        return ReportAck(
            child_id=child_id,
            sequence=body.sequence,
            digest=digest,
            stored=False,
            last_accepted_sequence=last_sequence.last_sequence if last_sequence is not None else body.sequence,
        )

    def _store(self, conn: Connection, delivery: _Delivery) -> AcceptedReport:
        """Checks 4-6 for one report inside its savepoint: log row, chain head, apply, audit."""
        body, digest = delivery.body, delivery.digest
        child_id = body.node_id
        accepted = AcceptedReport(
            child_id=child_id, body=body, envelope=delivery.envelope, digest=digest, received_at=self._clock()
        )
        # The log row goes in FIRST: its UNIQUE(child_id, sequence) turns a re-delivery into an IntegrityError
        # (answered by _answer_duplicate). A refused check below rolls the row back with the savepoint.
        try:
            _INSERT_RECEIVED.execute(conn, _prefixed(_received_values(accepted)))
        except (SqlIntegrityError, driver_integrity_error(conn)) as error:
            raise _AlreadyStoredError from error  # leaves the savepoint (rolled back) before answering
        chain_row = _CHAIN_HEAD_FOR_UPDATE.fetch_one(conn, {"chain_child": child_id})
        head = None if chain_row is None else ChainHead(int(chain_row[0]), bytes(chain_row[1]))
        self._check_chain(head, body)
        if head is None and body.sequence != 1:
            log.warning("first report from child %s starts at #%s (chain joined late)", child_id, body.sequence)
        (_INSERT_CHAIN if head is None else _UPDATE_CHAIN).execute(conn, _prefixed(_chain_values(accepted)))
        self._apply(conn, [accepted])
        if self._audit is not None:
            self._audit.accepted_many(conn, [accepted])  # commits with the report, or not at all
        return accepted


def _received_values(accepted: AcceptedReport) -> dict[str, object]:
    """The received_reports row of an accepted report."""
    return {
        "child_id": accepted.child_id,
        "sequence": accepted.body.sequence,
        "digest": accepted.digest,
        "kind": accepted.kind,
        "envelope": accepted.envelope.SerializeToString(),
        "bucket_count": len(accepted.body.buckets),
        "received_at": accepted.received_at,
    }


def _chain_values(accepted: AcceptedReport) -> dict[str, object]:
    """The child_chains row once this accepted report is its child's head."""
    body = accepted.body
    return {
        "child_id": accepted.child_id,
        "last_sequence": body.sequence,
        "last_digest": accepted.digest,
        "last_received_at": accepted.received_at,
        "last_created_at_ms": body.created_at_ms,
        "nodes_in_subtree": max(body.completeness.nodes_in_subtree, 1),
        "nodes_reported_in_window": body.completeness.nodes_reported_in_window,
    }


def _stored_ack(delivery: _Delivery) -> ReportAck:
    return ReportAck(
        child_id=delivery.body.node_id,
        sequence=delivery.body.sequence,
        digest=delivery.digest,
        stored=True,
        last_accepted_sequence=delivery.body.sequence,
    )
