"""Upward reports of a node: build + sign into the durable outbox, send with retries, apply children's reports.

Builder (one transaction, under a per-node lock):
  R = node_counters['metric_revision'], read FIRST after taking its row lock (node.supervision.metrics.lock_revision);
  base = up_to_revision of the newest report in the outbox
  (every report put there will be delivered in order — the outbox never drops — so changes before it are
  on their way). INCREMENTAL: keys whose own metric bucket or child bucket has revision > base; FULL: every
  key of the last ``full_report_window_days`` days. Totals per (day, basic_code, item_type_code) = Σ own +
  Σ children's latest (node.reporting.subtree). The report names each child's latest (sequence, digest), the
  completeness counts and the revision range, is signed with the node's Ed25519 report key (its certificate
  chain attached, so any ancestor verifies it up to the root; node.trust.node_keys), chained onto
  the previous report and appended to the outbox. Big reports are split into several chained reports of
  at most MAX_BUCKETS_PER_REPORT buckets so every message stays far below gRPC's 4 MB default.

  Taking the counter row before reading is what makes ``revision > base`` safe: metric writers bump that row
  first and hold its lock until they commit, so when the builder holds it every change with revision <= R is
  committed and visible, and any later change gets a higher revision and goes into the next report.

Applying a child's report (parent side, inside the receiver's transaction): bump this node's metric revision
once, upsert the child's buckets with it (INCREMENTAL); a FULL report also zeroes the child's buckets in its
window that the report does not name (zeroed, not deleted, so the change itself reaches the next report up).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import grpc
from sqlalchemy import Connection, Table, bindparam, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from federation import (
    COUNTER_FIELDS,
    REPORT_BODY_TYPE,
    AcceptedReport,
    BackoffPolicy,
    BackPressureError,
    DriverStatement,
    IntegrityError,
    Outbox,
    SupnetError,
    load_child_chains,
    report_digest,
    serialize,
    short_hex,
    supnet_error_from_rpc,
)
from federation.proto.v1.common_pb2 import Completeness as CompletenessMessage
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from federation.proto.v1.report_pb2 import Bucket, ChildReportRef, ReportBody, ReportKind
from node.errors import InvalidArgumentError
from node.notify import NoticeKind, notify_operators, notify_operators_resolved
from node.reporting.subtree import BucketTotals, ChildStatus, children_status, subtree_buckets, subtree_completeness
from node.store import ChildBucket, counter_value, current_revision, increment_counter, lock_revision, next_revision
from node.trust import SigningIdentity, channel_to, credentials_stamp, pki_directory, signing_identity

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

ReportKindName = Literal["incremental", "full"]

OUTBOX_OVERFLOW_COUNTER = "report_outbox_overflows"
# ~110 bytes per bucket at most: 10,000 buckets stay near 1 MB per message.
MAX_BUCKETS_PER_REPORT = 10_000
_KIND_WIRE = {"incremental": ReportKind.REPORT_KIND_INCREMENTAL, "full": ReportKind.REPORT_KIND_FULL}

_child_buckets = cast(Table, ChildBucket.__table__)

_build_locks: dict[str, threading.Lock] = {}
_build_locks_guard = threading.Lock()


def _build_lock(node: Node) -> threading.Lock:
    # Two builders in one process (scheduled job and report-on-change) must not race for a sequence number.
    key = str(node.data_dir.resolve())
    with _build_locks_guard:
        lock = _build_locks.get(key)
        if lock is None:
            lock = _build_locks[key] = threading.Lock()
        return lock


def node_outbox(node: Node) -> Outbox:
    """The node's outbox with its configured bound and retry policy."""
    federation = node.config.federation
    return Outbox(
        max_pending=federation.outbox_max_reports,
        backoff=BackoffPolicy(base_seconds=federation.retry_base_seconds, max_seconds=federation.retry_max_seconds),
    )


def _unix_ms(node: Node, moment: datetime) -> int:
    return int(moment.replace(tzinfo=node.tz).timestamp() * 1000)


def _bucket_message(totals: BucketTotals) -> Bucket:
    counters = Counters(**{name: value for name, value in zip(COUNTER_FIELDS, totals.counters, strict=True) if value})
    return Bucket(
        day=totals.day.isoformat(),
        basic_code=totals.basic_code,
        item_type_code=totals.item_type_code,
        counters=counters,
    )


def _chunks(buckets: list[BucketTotals], kind: ReportKindName) -> list[list[BucketTotals]]:
    """Split into reports of at most MAX_BUCKETS_PER_REPORT; FULL chunks end on a day boundary (own window)."""
    if len(buckets) <= MAX_BUCKETS_PER_REPORT:
        return [buckets]
    if kind == "incremental":
        return [buckets[i : i + MAX_BUCKETS_PER_REPORT] for i in range(0, len(buckets), MAX_BUCKETS_PER_REPORT)]
    chunks: list[list[BucketTotals]] = [[]]
    for index, bucket in enumerate(buckets):
        current = chunks[-1]
        new_day = index > 0 and bucket.day != buckets[index - 1].day
        if new_day and len(current) >= MAX_BUCKETS_PER_REPORT:
            chunks.append([])
        chunks[-1].append(bucket)
    return chunks


@dataclass(frozen=True, slots=True)
class BuiltReport:
    """A report just signed and queued."""

    envelope: SignedEnvelope
    sequence: int
    digest: bytes
    bucket_count: int


def build_reports(
    node: Node, kind: ReportKindName = "incremental", *, only_if_changed: bool = False
) -> list[BuiltReport]:
    """Build, sign and queue this node's next report(s); [] when there is no parent or nothing to say.

    An INCREMENTAL report is built even when nothing changed (it is the heartbeat that keeps this node
    fresh at its parent) unless ``only_if_changed``. A full outbox raises BackPressureError after the
    overflow is counted (node_counters + Prometheus) and logged at ERROR; nothing is lost, the buckets keep
    the data for a later report.
    """
    if kind not in _KIND_WIRE:
        raise InvalidArgumentError(f"report kind must be 'incremental' or 'full', got {kind!r}")
    federation = node.config.federation
    if not federation.parent_address:
        log.debug("node %s has no parent address; no report built", node.config.id)
        return []
    identity = signing_identity(node)
    outbox = node_outbox(node)
    now = node.now()
    with _build_lock(node):
        try:
            with node.engine.begin() as conn:
                return _build_in_transaction(
                    node, conn, outbox, identity, kind=kind, now=now, only_if_changed=only_if_changed
                )
        except BackPressureError as error:
            _record_overflow(node, now, error)
            raise


def _build_in_transaction(
    node: Node,
    conn: Connection,
    outbox: Outbox,
    identity: SigningIdentity,
    *,
    kind: ReportKindName,
    now: datetime,
    only_if_changed: bool,
) -> list[BuiltReport]:
    revision = lock_revision(conn)  # FIRST: see the module docstring
    head = outbox.head(conn)
    base = head.up_to_revision if head is not None else 0
    if only_if_changed and kind == "incremental" and revision <= base and head is not None:
        return []
    outbox.check_room(conn, node.config.id)
    window_start = window_end = None
    if kind == "full":
        window_end = now.date()
        window_start = window_end - timedelta(days=node.config.federation.full_report_window_days - 1)
        buckets = [
            bucket
            for bucket in subtree_buckets(conn, day_from=window_start, day_to=window_end)
            if any(bucket.counters)  # absent means zero in a FULL report
        ]
    else:
        buckets = subtree_buckets(conn, changed_since=base)
    statuses = children_status(node, conn, now)
    completeness = subtree_completeness(statuses)
    child_refs = [
        ChildReportRef(child_id=state.child_id, sequence=state.last_sequence, digest=state.last_digest)
        for state in sorted(load_child_chains(conn).values(), key=lambda state: state.child_id)
    ]
    sequence = head.sequence if head is not None else 0
    previous_digest = head.digest if head is not None else b""
    built: list[BuiltReport] = []
    chunks = _chunks(buckets, kind)
    for index, chunk in enumerate(chunks):
        sequence += 1
        body = ReportBody(
            node_id=node.config.id,
            sequence=sequence,
            previous_digest=previous_digest,
            created_at_ms=_unix_ms(node, now),
            kind=_KIND_WIRE[kind],
            buckets=[_bucket_message(bucket) for bucket in chunk],
            child_reports=child_refs,
            completeness=CompletenessMessage(
                nodes_in_subtree=completeness.nodes_in_subtree,
                nodes_reported_in_window=completeness.nodes_reported_in_window,
            ),
            base_revision=base,
            up_to_revision=revision,
        )
        if window_start is not None and window_end is not None:
            # A split FULL report covers its own days only, so each part replaces exactly those days.
            first = window_start if index == 0 else chunk[0].day
            last = window_end if index == len(chunks) - 1 else chunks[index + 1][0].day - timedelta(days=1)
            body.window_start_day = first.isoformat()
            body.window_end_day = last.isoformat()
        envelope = identity.sign(REPORT_BODY_TYPE, serialize(body))
        digest = report_digest(envelope)
        outbox.append(
            conn,
            sequence=sequence,
            digest=digest,
            previous_digest=previous_digest,
            kind=kind,
            envelope=envelope.SerializeToString(),
            now=now,
            bucket_count=len(chunk),
            base_revision=base,
            up_to_revision=revision,
            node_id=node.config.id,
        )
        built.append(BuiltReport(envelope=envelope, sequence=sequence, digest=digest, bucket_count=len(chunk)))
        previous_digest = digest
    log.info(
        "node %s built %s report #%s (%s buckets, revisions %s..%s, completeness %s/%s)",
        node.config.id,
        kind,
        sequence,
        len(buckets),
        base,
        revision,
        completeness.nodes_reported_in_window,
        completeness.nodes_in_subtree,
    )
    return built


def _record_overflow(node: Node, now: datetime, error: BackPressureError) -> None:
    """Count the refused report persistently (node_counters) in its own transaction; the outbox logged it at ERROR."""
    with node.engine.begin() as conn:
        increment_counter(conn, OUTBOX_OVERFLOW_COUNTER)
    log.error(
        "node %s: report refused at %s, outbox overflow counted (%s); data stays in the buckets",
        node.config.id,
        now,
        error.message,
    )
    federation = node.config.federation
    parent = federation.parent_id or node.config.parent_id or "(parent)"
    notify_operators(
        node,
        NoticeKind.OUTBOX_OVERFLOW,
        parent,
        f"reports to {parent} are not getting through: the outbox is full",
        (
            f"Node {node.config.id} could not queue a new report at {now:%Y-%m-%d %H:%M:%S}: {error.message}. "
            f"Its parent {parent} at {federation.parent_address} has not acknowledged them. Nothing is lost: the "
            f"data stays in this node's buckets and goes up with the next report once the outbox drains. Check the "
            f"parent and the network; 'supnet stats --subtree' shows the outbox."
        ),
        now=now,
    )


def outbox_overflow_count(node: Node) -> int:
    """How many reports were refused because the outbox was full (persistent counter)."""
    with node.engine.connect() as conn:
        return counter_value(conn, OUTBOX_OVERFLOW_COUNTER) or 0


_BUCKET_KEY_COLUMNS = ("child_id", "day", "basic_code", "item_type_code")


_BUCKET_ROW_COLUMNS = (*_BUCKET_KEY_COLUMNS, *COUNTER_FIELDS, "revision")


def _child_bucket_upsert(dialect_module: Any) -> DriverStatement:
    """INSERT .. ON CONFLICT DO UPDATE of a child's buckets (applying a child report: a parent's hot path)."""
    statement = dialect_module.insert(_child_buckets)
    # Bind names differ from column names: SQLAlchemy reserves column names in VALUES for itself.
    statement = statement.values({name: bindparam(f"p_{name}") for name in _BUCKET_ROW_COLUMNS})
    return DriverStatement(
        statement.on_conflict_do_update(
            index_elements=[_child_buckets.c[name] for name in _BUCKET_KEY_COLUMNS],
            set_={name: statement.excluded[name] for name in (*COUNTER_FIELDS, "revision")},
        )
    )


# Each dialect's ON CONFLICT construct compiles only on its own dialect, so one statement per dialect.
_CHILD_BUCKET_UPSERT = {"sqlite": _child_bucket_upsert(sqlite), "postgresql": _child_bucket_upsert(postgresql)}


# FULL report: the child's keys of the window it did not name are zero now (see the module docstring).
_ZERO_UNNAMED = (
    update(_child_buckets)
    .where(
        _child_buckets.c.child_id == bindparam("zero_child"),
        _child_buckets.c.day >= bindparam("window_start"),
        _child_buckets.c.day <= bindparam("window_end"),
        _child_buckets.c.revision != bindparam("new_revision"),
        or_(*(_child_buckets.c[name] != 0 for name in COUNTER_FIELDS)),
    )
    .values(**dict.fromkeys(COUNTER_FIELDS, 0), revision=bindparam("new_revision"))
)


def _bucket_rows(conn: Connection, upsert: DriverStatement, report: AcceptedReport, revision: int) -> list[Any]:
    """One report's buckets as upsert rows in the driver's form (positional on SQLite)."""
    body = report.body
    # The driver gets the day as ISO text on SQLite (how SQLAlchemy stores Date there), a date elsewhere.
    sqlite_days = conn.dialect.name == "sqlite"
    positions = upsert.positions(conn.dialect)
    rows: list[Any] = []
    if positions is None:
        template: dict[str, Any] = dict.fromkeys((f"p_{name}" for name in _BUCKET_ROW_COLUMNS), 0)
        template["p_child_id"] = report.child_id
        template["p_revision"] = revision
        for bucket in body.buckets:
            named = dict(template)
            # ListFields holds only the non-zero counters: reports are sparse, the template has the zeros.
            for field, value in bucket.counters.ListFields():
                named[f"p_{field.name}"] = value
            named["p_day"] = bucket.day if sqlite_days else date.fromisoformat(bucket.day)
            named["p_basic_code"] = bucket.basic_code
            named["p_item_type_code"] = bucket.item_type_code
            rows.append(named)
        return rows
    ordered: list[Any] = [0] * len(positions)
    ordered[positions["p_child_id"]] = report.child_id
    ordered[positions["p_revision"]] = revision
    counter_positions = {name: positions[f"p_{name}"] for name in COUNTER_FIELDS}
    day, basic, item_type = positions["p_day"], positions["p_basic_code"], positions["p_item_type_code"]
    for bucket in body.buckets:
        row = ordered.copy()
        for field, value in bucket.counters.ListFields():
            row[counter_positions[field.name]] = value
        row[day] = bucket.day if sqlite_days else date.fromisoformat(bucket.day)
        row[basic] = bucket.basic_code
        row[item_type] = bucket.item_type_code
        rows.append(tuple(row))
    return rows


def apply_child_reports(conn: Connection, reports: Sequence[AcceptedReport]) -> None:
    """Apply verified child reports, in order, inside the receiver's transaction: buckets become children's state.

    Each report gets a metric revision of its own, so a FULL report zeroes exactly the keys of its window that
    it did not name, also when an earlier report of the same child is in the same batch. The buckets of
    consecutive incremental reports go to the driver in one executemany.
    """
    if not reports:
        return
    upsert = _CHILD_BUCKET_UPSERT[conn.dialect.name]
    revision = next_revision(conn, len(reports)) - len(reports)
    pending: list[Any] = []
    for report in reports:
        revision += 1
        body = report.body
        pending.extend(_bucket_rows(conn, upsert, report, revision))
        if body.kind == ReportKind.REPORT_KIND_FULL:
            upsert.execute_many(conn, pending)
            pending = []
            # Zeroed rather than deleted, so this node's next incremental report carries the drop upward too.
            conn.execute(
                _ZERO_UNNAMED,
                {
                    "zero_child": report.child_id,
                    "window_start": date.fromisoformat(body.window_start_day),
                    "window_end": date.fromisoformat(body.window_end_day),
                    "new_revision": revision,
                },
            )
    if pending:
        upsert.execute_many(conn, pending)


def check_children_staleness(node: Node) -> list[ChildStatus]:
    """Scheduler job: every child's freshness; stale and missing registered children are logged at WARNING."""
    now = node.now()
    with node.engine.connect() as conn:
        statuses = children_status(node, conn, now)
    for status in statuses:
        if not status.registered:
            continue
        if status.state == "fresh":
            notify_operators_resolved(
                node,
                NoticeKind.CHILD_SILENT,
                status.child_id,
                f"child {status.child_id} reports again",
                f"Child {status.child_id} of node {node.config.id} reports again (report #{status.last_sequence}).",
                now=now,
            )
            continue
        if status.state == "missing":
            log.warning("child %s of node %s has never reported", status.child_id, node.config.id)
            what = "has never reported"
        else:
            log.warning(
                "child %s of node %s is stale: last report #%s received %s; its subtree counts as not reported",
                status.child_id,
                node.config.id,
                status.last_sequence,
                status.last_received_at,
            )
            what = (
                f"has not reported since {status.last_received_at:%Y-%m-%d %H:%M:%S} (report #{status.last_sequence})"
            )
        notify_operators(
            node,
            NoticeKind.CHILD_SILENT,
            status.child_id,
            f"child {status.child_id} is silent",
            (
                f"Child {status.child_id} of node {node.config.id} {what}. Until it reports, its subtree counts "
                f"as not reported in the completeness this node sends up. Check the child node and its connection "
                f"to this node."
            ),
            now=now,
        )
    return statuses


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one ``send_pending`` pass did."""

    acked: int = 0
    failed: bool = False
    error: str = ""
    pending: int = 0


# With report_on_change, how often the sender looks for changes other processes wrote to the database.
CHANGE_POLL_SECONDS = 1.0


class ReportSender:
    """Delivers the outbox to the parent, oldest first; optional background loop with debounced report-on-change.

    ``start()`` runs a daemon thread that sends whatever is due (retries follow the outbox's backoff) and,
    when ``federation.report_on_change`` is on, builds an incremental report ``report_debounce_seconds``
    after the last ``notify_change()``. Scheduler jobs call ``scheduled_report``, ``scheduled_full_report``
    and ``send_pending`` directly; a refused or undelivered report is recorded in the outbox, not raised.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self._outbox = node_outbox(node)
        self._channel: grpc.Channel | None = None
        self._channel_stamp: object = None
        self._stub: NodeServiceStub | None = None
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._changed_at: float | None = None
        self._seen_revision: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def parent_address(self) -> str:
        """The configured parent address ('' at the root)."""
        return self.node.config.federation.parent_address

    @property
    def parent_id(self) -> str:
        """The parent's node id (the identity its TLS certificate must name)."""
        return self.node.config.federation.parent_id or self.node.config.parent_id

    def _credentials_stamp(self) -> object:
        pki = pki_directory(self.node.data_dir)
        return credentials_stamp(pki)

    def _stub_or_none(self) -> NodeServiceStub | None:
        if self._channel is not None and self._channel_stamp != self._credentials_stamp():
            # Our TLS files changed (rotation, renewal): the next report goes over a channel with the new ones.
            self._reset_channel()
        if self._stub is None:
            if self._channel is None:
                if not self.parent_address:
                    return None
                self._channel_stamp = self._credentials_stamp()
                # Mutual TLS accepting only the parent's certificate (plaintext only under the explicit switch).
                self._channel = channel_to(self.node, self.parent_address, self.parent_id)
            self._stub = NodeServiceStub(self._channel)
        return self._stub

    def send_pending(self) -> SendResult:
        """Send due reports oldest first until one fails; refusals and an unreachable parent are recorded."""
        if self._stopping.is_set():
            return SendResult()  # stopped: a late scheduler job must not open a new channel during shutdown
        try:
            stub = self._stub_or_none()
        except SupnetError as unusable:
            # Our own credentials are unusable (expired, missing): nothing can be sent until an operator acts.
            log.error(
                "node %s cannot open a channel to its parent: [%s] %s", self.node.config.id, unusable.code, unusable
            )
            return SendResult(failed=True, error=unusable.message)
        if stub is None:
            return SendResult()
        timeout = self.node.config.federation.rpc_timeout_seconds
        acked = 0
        with self._send_lock:
            with self.node.engine.connect() as conn:
                due = self._outbox.due(conn, self.node.now())
            for entry in due:
                if self._stopping.is_set():
                    break
                envelope = SignedEnvelope.FromString(entry.envelope)
                try:
                    ack = stub.SubmitReport(envelope, timeout=timeout)
                    if ack.sequence != entry.sequence or ack.digest != entry.digest:
                        raise IntegrityError(
                            f"parent acknowledged #{ack.sequence} ({short_hex(ack.digest)}) for report "
                            f"#{entry.sequence} ({short_hex(entry.digest)})"
                        )
                except (grpc.RpcError, SupnetError) as failure:
                    error = (
                        supnet_error_from_rpc(failure, self.parent_address)
                        if isinstance(failure, grpc.RpcError)
                        else failure
                    )
                    if error.code == "UNAVAILABLE":
                        # A fresh channel on the next attempt: gRPC's own reconnect backoff (up to minutes)
                        # must not delay noticing that the parent is back; the outbox backoff paces retries.
                        self._reset_channel()
                    return self._record_failure(entry.sequence, error, acked)
                with self.node.engine.begin() as conn:
                    acked += self._outbox.mark_acked(conn, entry.sequence, entry.digest, self.node.now())
                log.info(
                    "report #%s of %s acknowledged by the parent (%s)",
                    entry.sequence,
                    self.node.config.id,
                    "stored" if ack.stored else "already stored",
                )
            with self.node.engine.begin() as conn:
                self._outbox.prune(conn)
                pending = self._outbox.pending_count(conn)
        return SendResult(acked=acked, pending=pending)

    def _reset_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def _record_failure(self, sequence: int, error: SupnetError, acked: int) -> SendResult:
        with self.node.engine.begin() as conn:
            retry_at = self._outbox.mark_failed(conn, sequence, f"[{error.code}] {error.message}", self.node.now())
            pending = self._outbox.pending_count(conn)
        # A refusal (bad chain, unknown child) needs an operator; an unreachable parent only needs time.
        level = logging.WARNING if error.code in {"UNAVAILABLE", "BACK_PRESSURE"} else logging.ERROR
        log.log(
            level,
            "report #%s of %s not delivered to %s: [%s] %s; retry at %s, %s pending",
            sequence,
            self.node.config.id,
            self.parent_address,
            error.code,
            error.message,
            retry_at,
            pending,
        )
        return SendResult(acked=acked, failed=True, error=error.message, pending=pending)

    def report_now(self, kind: ReportKindName = "incremental", *, only_if_changed: bool = False) -> SendResult:
        """Build a report (if there is room) and send everything due; delivery failures are recorded, not raised."""
        try:
            build_reports(self.node, kind, only_if_changed=only_if_changed)
        except BackPressureError:
            pass  # counted and logged by build_reports; still try to drain so room frees up
        except SupnetError as error:
            log.error("node %s could not build a %s report: [%s] %s", self.node.config.id, kind, error.code, error)
        return self.send_pending()

    def scheduled_report(self) -> SendResult:
        """Scheduler job: the periodic incremental report (also the heartbeat) and delivery."""
        return self.report_now("incremental")

    def scheduled_full_report(self) -> SendResult:
        """Scheduler job: the periodic full report over the configured window, and delivery."""
        return self.report_now("full")

    def notify_change(self) -> None:
        """Tell the sender local or child data changed; with report_on_change a report follows after the debounce."""
        if not self.node.config.federation.report_on_change:
            return
        self._changed_at = time.monotonic()
        self._wake.set()

    def start(self) -> None:
        """Start the background delivery loop (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"report-sender-{self.node.config.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and close the channel to the parent; pending reports stay in the outbox."""
        self._stopping.set()
        self._wake.set()
        # Closing the channel first cancels an in-flight SubmitReport at once (it is recorded as a failed
        # attempt and retried after a restart) instead of holding shutdown for up to rpc_timeout_seconds.
        channel = self._channel  # read once: the loop may reset it meanwhile
        if channel is not None:
            channel.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._send_lock:
            self._reset_channel()

    def _seconds_until_due(self) -> float:
        with self.node.engine.connect() as conn:
            next_at = self._outbox.next_attempt_at(conn)
        if next_at is None:
            return 60.0
        return max((next_at - self.node.now()).total_seconds(), 0.0)

    def _poll_revision(self) -> None:
        """Notice metric changes written by other processes on this database (``supnet import``, ``supnet scan``).

        In-process writers call ``notify_change``; a CLI import beside ``supnet serve`` can only be seen in the
        database. Our own changes are seen here too: harmless, the debounced report is built only if changed.
        """
        with self.node.engine.connect() as conn:
            revision = current_revision(conn)
        if self._seen_revision is not None and revision > self._seen_revision and self._changed_at is None:
            log.debug(
                "node %s: metric revision %s -> %s; report follows", self.node.config.id, self._seen_revision, revision
            )
            self._changed_at = time.monotonic()
        self._seen_revision = revision

    def _run(self) -> None:
        debounce = self.node.config.federation.report_debounce_seconds
        on_change = self.node.config.federation.report_on_change
        while not self._stopping.is_set():
            try:
                wait = self._seconds_until_due()
                if on_change:
                    self._poll_revision()
                    wait = min(wait, CHANGE_POLL_SECONDS)
                if self._changed_at is not None:
                    wait = min(wait, max(self._changed_at + debounce - time.monotonic(), 0.0))
                woken = self._wake.wait(min(wait, 60.0))
                self._wake.clear()
                if self._stopping.is_set():
                    break
                changed_at = self._changed_at
                if changed_at is not None and time.monotonic() - changed_at >= debounce:
                    self._changed_at = None
                    self.report_now("incremental", only_if_changed=True)
                elif woken or self._seconds_until_due() <= 0:
                    # Not on every change poll: only when something may be due (or someone asked).
                    self.send_pending()
            except Exception:
                # The loop must survive a bad moment (database locked, parent gone); the outbox keeps the data.
                log.exception("report sender loop of %s failed; continuing", self.node.config.id)
                self._stopping.wait(1.0)
