"""A parent's child figures checked against the children's signed reports it stored (docs/architecture.md).

``child_buckets``, ``child_activity_counts`` and ``child_catalogues`` are what the drill-down serves and the next
report sums, but they are plain rows: an edit at rest would be served upward as verified.
``child_figures_differences`` replays each child's stored envelopes (signature checked at the report's creation time,
hash chain unbroken up to the held head) and names every row that differs from what those signed reports say.
The children's month roll-up (``child_month_buckets``) is checked against the day buckets in the same snapshot.
``supnet metrics check`` and the scheduled integrity job run it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, select

from federation import (
    COUNTER_FIELDS,
    ChainHead,
    KeyResolver,
    StaticKeyResolver,
    SupnetError,
    UnauthenticatedError,
    load_child_chains,
    parse_body,
    received_reports,
    replay_reports,
    report_digest,
    short_hex,
    verify_history,
    verify_with_resolver,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody, ReportKind
from node.reporting.month_rollup import month_rollup_differences
from node.store import ChildActivityCount, ChildBucket, ChildCatalogue
from node.trust import node_trust

if TYPE_CHECKING:
    from node.app import Node

__all__ = ["ChildFiguresCheck", "child_figures_differences"]

_child_buckets = cast(Table, ChildBucket.__table__)
_child_catalogues = cast(Table, ChildCatalogue.__table__)
_child_activity = cast(Table, ChildActivityCount.__table__)
MAX_DIFFERENCES_PER_CHILD = 20


@dataclass(frozen=True, slots=True)
class ChildFiguresCheck:
    """The outcome for the whole node: children checked, reports replayed, and each difference named."""

    children: int
    reports: int
    differences: tuple[str, ...]

    @property
    def consistent(self) -> bool:
        """True when every stored child figure is what the child's signed reports say."""
        return not self.differences


class _Verifier:
    """Checks one stored envelope's signature: certificate chains (PKI) or the configured child keys."""

    def __init__(self, node: Node) -> None:
        trust = node_trust(node)
        self._certificates = trust.key_resolver if trust is not None else None
        self._static: KeyResolver | None = None
        if trust is None:
            children = {child.id: child.public_key for child in node.config.federation.children if child.public_key}
            self._static = StaticKeyResolver.from_b64(children)

    def check(self, envelope: SignedEnvelope, body: ReportBody) -> None:
        if self._certificates is not None:
            try:
                self._certificates.verify(envelope)
            except UnauthenticatedError:
                if not body.created_at_ms:
                    raise
                # A report signed under a key that has since rotated and expired: its chain was valid when it was
                # made (revocation still applies at any time), as the receiver and ``supnet verify`` accept it.
                self._certificates.verify(envelope, dt.datetime.fromtimestamp(body.created_at_ms / 1000, dt.UTC))
        elif self._static is not None:
            verify_with_resolver(envelope, self._static)


def _stored_envelopes(conn: Connection, child_id: str) -> Iterable[tuple[int, bytes, bytes]]:
    r = received_reports.c
    query = select(r.sequence, r.digest, r.envelope).where(r.child_id == child_id).order_by(r.sequence)
    for sequence, digest, raw in conn.execute(query):
        yield int(sequence), bytes(digest), bytes(raw)


def _stored_buckets(conn: Connection, child_id: str) -> dict[tuple[str, str, str], dict[str, int]]:
    c = _child_buckets.c
    rows = conn.execute(
        select(c.day, c.basic_code, c.item_type_code, *(c[name] for name in COUNTER_FIELDS)).where(
            c.child_id == child_id
        )
    )
    stored: dict[tuple[str, str, str], dict[str, int]] = {}
    for day, basic_code, item_type_code, *values in rows:
        shown = day.isoformat() if isinstance(day, (date, datetime)) else str(day)
        stored[(shown, basic_code, item_type_code)] = {
            name: int(value or 0) for name, value in zip(COUNTER_FIELDS, values, strict=True)
        }
    return stored


def _bucket_differences(
    child_id: str, stored: dict[tuple[str, str, str], dict[str, int]], signed: dict[tuple[str, str, str], Any]
) -> list[str]:
    found: list[str] = []
    for key in sorted(set(stored) | set(signed)):
        have, said = stored.get(key, {}), signed.get(key, {})
        for name in COUNTER_FIELDS:
            if have.get(name, 0) != said.get(name, 0):
                day, basic_code, item_type_code = key
                found.append(
                    f"child {child_id} bucket {day} / item {basic_code or '-'} / type {item_type_code or '-'}: "
                    f"{name} stored {have.get(name, 0)}, its signed reports say {said.get(name, 0)}"
                )
    return found


ActivityKey = tuple[str, str, str]


def _replay_activity(bodies: Iterable[ReportBody]) -> dict[ActivityKey, int]:
    """A child's signed activity counts from its reports in order: INCREMENTAL upserts, FULL replaces its window."""
    state: dict[ActivityKey, int] = {}
    for body in bodies:
        if body.kind == ReportKind.REPORT_KIND_FULL:
            start, end = body.window_start_day, body.window_end_day
            for key in [key for key in state if start <= key[0] <= end]:
                del state[key]
        for entry in body.activity:
            state[(entry.day, entry.metric, entry.kind)] = int(entry.count)
    return state


def _stored_activity(conn: Connection, child_id: str) -> dict[ActivityKey, int]:
    c = _child_activity.c
    rows = conn.execute(select(c.day, c.metric, c.kind, c["count"]).where(c.child_id == child_id))
    stored: dict[ActivityKey, int] = {}
    for day, metric, kind, count in rows:
        shown = day.isoformat() if isinstance(day, (date, datetime)) else str(day)
        stored[(shown, metric, kind)] = int(count or 0)
    return stored


def _activity_differences(child_id: str, stored: dict[ActivityKey, int], signed: dict[ActivityKey, int]) -> list[str]:
    found: list[str] = []
    for key in sorted(set(stored) | set(signed)):
        have, said = stored.get(key, 0), signed.get(key, 0)
        if have != said:
            day, metric, kind = key
            found.append(
                f"child {child_id} activity {day} / {metric} / {kind or '-'}: count stored {have}, "
                f"its signed reports say {said}"
            )
    return found


def _check_child(conn: Connection, verifier: _Verifier, child_id: str, head: ChainHead) -> tuple[int, list[str]]:
    """(reports replayed, differences) of one child."""
    bodies: list[ReportBody] = []
    envelopes: list[SignedEnvelope] = []
    for sequence, digest, raw in _stored_envelopes(conn, child_id):
        envelope = SignedEnvelope.FromString(raw)
        if report_digest(envelope) != digest:
            return len(bodies), [f"child {child_id} report #{sequence}: stored bytes do not match their digest"]
        body = parse_body(envelope, ReportBody)
        try:
            verifier.check(envelope, body)
        except SupnetError as error:
            return len(bodies), [f"child {child_id} report #{sequence}: signature does not verify: {error.message}"]
        if body.node_id != child_id or body.sequence != sequence:
            return len(bodies), [f"child {child_id} report #{sequence}: stored under another child or sequence"]
        bodies.append(body)
        envelopes.append(envelope)
    try:
        last = verify_history(envelopes, accept_first_at_any_sequence=True)
    except SupnetError as error:
        return len(bodies), [f"child {child_id}: stored reports do not form one chain: {error.message}"]
    if last != head:
        held = f"#{head.sequence} {short_hex(head.digest)}"
        found = "none" if last is None else f"#{last.sequence} {short_hex(last.digest)}"
        return len(bodies), [f"child {child_id}: chain head held as {held}, its stored reports end at {found}"]
    differences = _bucket_differences(child_id, _stored_buckets(conn, child_id), replay_reports(bodies))
    differences += _activity_differences(child_id, _stored_activity(conn, child_id), _replay_activity(bodies))
    latest = next((body for body in reversed(bodies) if body.HasField("catalogue")), None)
    stored_catalogue = conn.execute(
        select(_child_catalogues.c.figures).where(_child_catalogues.c.child_id == child_id)
    ).scalar_one_or_none()
    said = latest.catalogue.SerializeToString(deterministic=True) if latest is not None else None
    if (bytes(stored_catalogue) if stored_catalogue is not None else None) != said:
        differences.append(f"child {child_id} item registers: stored figures differ from its latest signed report")
    if len(differences) > MAX_DIFFERENCES_PER_CHILD:
        more = len(differences) - MAX_DIFFERENCES_PER_CHILD
        differences = [*differences[:MAX_DIFFERENCES_PER_CHILD], f"child {child_id}: … and {more} more differences"]
    return len(bodies), differences


def child_figures_differences(node: Node) -> ChildFiguresCheck:
    """Replay every child's stored signed reports and compare with the stored child figures, in one snapshot."""
    with node.engine.connect() as raw_conn:
        conn = raw_conn
        if conn.dialect.name == "postgresql":
            conn = raw_conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            # pysqlite only opens transactions for writes; an explicit BEGIN pins one WAL snapshot for all reads, so
            # a report stored meanwhile cannot show as a chain head that disagrees with the stored reports.
            conn.exec_driver_sql("BEGIN")
        try:
            return _check_children(node, conn)
        finally:
            conn.rollback()


def _check_children(node: Node, conn: Connection) -> ChildFiguresCheck:
    """Every child's stored reports replayed against its stored figures, inside the caller's snapshot."""
    reports = 0
    differences: list[str] = []
    chains = load_child_chains(conn)
    stored_children = {
        row[0]
        for table in (_child_buckets, _child_activity)
        for row in conn.execute(select(table.c.child_id).distinct())
    }
    # Only a node that holds children's reports needs their keys (a leaf may have no TLS credentials at all).
    verifier = _Verifier(node) if chains else None
    for child_id in sorted(set(chains) | stored_children):
        state = chains.get(child_id)
        if state is None:
            differences.append(f"child {child_id}: figures stored but no report of it was ever received")
            continue
        assert verifier is not None  # chains is not empty
        head = ChainHead(state.last_sequence, state.last_digest)
        replayed, found = _check_child(conn, verifier, child_id, head)
        reports += replayed
        differences.extend(found)
    # The month roll-up is derived from the day buckets just checked: it must be their sum, row for row.
    differences.extend(month_rollup_differences(conn, limit=MAX_DIFFERENCES_PER_CHILD))
    return ChildFiguresCheck(
        children=len(set(chains) | stored_children), reports=reports, differences=tuple(differences)
    )
