"""Build + sign this node's upward reports into the durable outbox (delivery: node.reporting.sender).

Builder (one transaction, under a per-node lock):
  R = node_counters['metric_revision'], read FIRST after taking its row lock (node.store.locked_revision);
  base = up_to_revision of the newest report in the outbox
  (every report put there will be delivered in order — the outbox never drops — so changes before it are
  on their way). INCREMENTAL: keys whose own metric bucket or child bucket has revision > base; FULL: every
  key of the last ``full_report_window_days`` days. Totals per (day, basic_code, item_type_code) = Σ own +
  Σ children's latest (node.reporting.subtree); the supervision activity counts per (day, metric, kind) the same
  way (changed keys, or the window's non-zero keys). The report names each child's latest (sequence, digest), the
  completeness counts and the revision range, is signed with the node's Ed25519 report key (its certificate
  chain attached, so any ancestor verifies it up to the root; node.trust.node_keys), chained onto
  the previous report and appended to the outbox. With ``spotcheck.commitments`` each report also carries, per bucket
  with own records, the root of a sum tree over those records (node.spotcheck), read in the same transaction. Big
  reports are split into several chained reports of at most MAX_BUCKETS_PER_REPORT buckets so every message stays
  far below gRPC's 4 MB default.

  Taking the counter row before reading is what makes ``revision > base`` safe: metric writers bump that row
  first and hold its lock until they commit, so when the builder holds it every change with revision <= R is
  committed and visible, and any later change gets a higher revision and goes into the next report. Only builders
  append to the outbox, so under that row its head and pending count are read once per build (federation.outbox
  AppendPoint), and the register figures are reused while the catalogue revision stays (node.reporting.catalogues).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Connection

from federation import (
    COUNTER_FIELDS,
    REPORT_BODY_TYPE,
    BackoffPolicy,
    BackPressureError,
    Outbox,
    crash_point,
    load_child_chains,
    report_digest,
    serialize,
)
from federation.proto.v1.common_pb2 import Completeness as CompletenessMessage
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import ActivityCount, Bucket, ChildReportRef, ReportBody, ReportKind
from node.errors import InvalidArgumentError
from node.notify import NoticeKind, notify_operators
from node.reporting.catalogues import catalogue_message, subtree_catalogue
from node.reporting.subtree import (
    ActivityTotals,
    BucketTotals,
    children_status,
    subtree_activity,
    subtree_buckets,
    subtree_completeness,
)
from node.spotcheck import bucket_commitments
from node.store import counter_value, increment_counter, locked_revision
from node.trust import SigningIdentity, signing_identity

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

ReportKindName = Literal["incremental", "full"]

OUTBOX_OVERFLOW_COUNTER = "report_outbox_overflows"
# ~110 bytes per bucket at most, ~180 with its spot-check commitment: 10,000 buckets stay under 2 MB per message.
MAX_BUCKETS_PER_REPORT = 10_000
_KIND_WIRE = {"incremental": ReportKind.REPORT_KIND_INCREMENTAL, "full": ReportKind.REPORT_KIND_FULL}

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


def _activity_message(totals: ActivityTotals) -> ActivityCount:
    return ActivityCount(day=totals.day.isoformat(), metric=totals.metric, kind=totals.kind, count=totals.count)


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
                built = _build_in_transaction(
                    node, conn, outbox, identity, kind=kind, now=now, only_if_changed=only_if_changed
                )
            if built:
                crash_point("report.queued")
            return built
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
    full_since: date | None = None,
) -> list[BuiltReport]:
    # full_since: a FULL report's first day instead of the configured window's (a resync sends everything).
    revision = locked_revision(conn)  # FIRST: see the module docstring
    head = outbox.head(conn)
    base = head.up_to_revision if head is not None else 0
    if only_if_changed and kind == "incremental" and revision <= base and head is not None:
        return []
    point = outbox.append_point(conn, head, node.config.id)  # refuses a full outbox
    window_start = window_end = None
    if kind == "full":
        window_end = now.date()
        window_start = full_since or window_end - timedelta(days=node.config.federation.full_report_window_days - 1)
        buckets = [
            bucket
            for bucket in subtree_buckets(conn, day_from=window_start, day_to=window_end)
            if any(bucket.counters)  # absent means zero in a FULL report
        ]
        activity = [total for total in subtree_activity(conn, day_from=window_start, day_to=window_end) if total.count]
    else:
        buckets = subtree_buckets(conn, changed_since=base)
        activity = subtree_activity(conn, changed_since=base)
    statuses = children_status(node, conn, now)
    completeness = subtree_completeness(statuses)
    child_refs = [
        ChildReportRef(child_id=state.child_id, sequence=state.last_sequence, digest=state.last_digest)
        for state in sorted(load_child_chains(conn).values(), key=lambda state: state.child_id)
    ]
    catalogue = catalogue_message(subtree_catalogue(conn, now))
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
            catalogue=catalogue,
        )
        if window_start is not None and window_end is not None:
            # A split FULL report covers its own days only, so each part replaces exactly those days.
            first = window_start if index == 0 else chunk[0].day
            last = window_end if index == len(chunks) - 1 else chunks[index + 1][0].day - timedelta(days=1)
            body.window_start_day = first.isoformat()
            body.window_end_day = last.isoformat()
            body.activity.extend(_activity_message(total) for total in activity if first <= total.day <= last)
        elif index == 0:
            body.activity.extend(_activity_message(total) for total in activity)  # few: all in the first part
        if node.config.spotcheck.commitments:
            # Spot checks: a root per bucket over this node's own records behind it (node.spotcheck).
            keys = [(bucket.day, bucket.basic_code, bucket.item_type_code) for bucket in chunk]
            body.commitments.extend(bucket_commitments(conn, identity, keys))
        envelope = identity.sign(REPORT_BODY_TYPE, serialize(body))
        digest = report_digest(envelope)
        point = outbox.append(
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
            at=point,  # read above in this transaction, under the locks: see the module docstring
        )
        built.append(BuiltReport(envelope=envelope, sequence=sequence, digest=digest, bucket_count=len(chunk)))
        crash_point("report.signed")
        previous_digest = digest
    log.info(
        "node %s built %s report #%s (%s buckets, %s activity counts, revisions %s..%s, completeness %s/%s)",
        node.config.id,
        kind,
        sequence,
        len(buckets),
        len(activity),
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
