"""A parent's side of its children's reports: apply the verified ones (buckets, register figures); staleness check.

Applying a child's report (inside the receiver's transaction): bump this node's metric revision once, upsert
the child's buckets with it (INCREMENTAL); a FULL report also zeroes the child's buckets in its window that the
report does not name (zeroed, not deleted, so the change itself reaches the next report up). The report's
supervision activity counts go to child_activity_counts the same way (upserted; a FULL report zeroes the child's
unnamed keys of its window). Each child's latest item-register figures go to child_catalogues. The months of
the child's day buckets that a batch touched are then rewritten in child_month_buckets (node.reporting.month_rollup).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, bindparam, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from federation import COUNTER_FIELDS, AcceptedReport, DriverStatement
from federation.proto.v1.report_pb2 import ReportKind
from node.notify import NoticeKind, notify_operators, notify_operators_resolved
from node.reporting.catalogues import store_child_catalogues
from node.reporting.month_rollup import RollupScope, refresh_child_months
from node.reporting.subtree import ChildStatus, children_status
from node.store import ChildActivityCount, ChildBucket, dialect_insert, next_catalogue_revision, next_revision

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

_child_buckets = cast(Table, ChildBucket.__table__)
_child_activity = cast(Table, ChildActivityCount.__table__)

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


# The same for the activity counts of a FULL report.
_ZERO_UNNAMED_ACTIVITY = (
    update(_child_activity)
    .where(
        _child_activity.c.child_id == bindparam("zero_child"),
        _child_activity.c.day >= bindparam("window_start"),
        _child_activity.c.day <= bindparam("window_end"),
        _child_activity.c.revision != bindparam("new_revision"),
        _child_activity.c["count"] != 0,
    )
    .values(count=0, revision=bindparam("new_revision"))
)


def _apply_activity(conn: Connection, report: AcceptedReport, revision: int) -> None:
    """Upsert one report's activity counts as the child's state; a FULL report also zeroes its window's others."""
    body = report.body
    if body.activity:
        statement = dialect_insert(conn, _child_activity)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[_child_activity.c[name] for name in ("child_id", "day", "metric", "kind")],
                set_={"count": statement.excluded["count"], "revision": statement.excluded.revision},
            ),
            [
                {
                    "child_id": report.child_id,
                    "day": date.fromisoformat(entry.day),
                    "metric": entry.metric,
                    "kind": entry.kind,
                    "count": entry.count,
                    "revision": revision,
                }
                for entry in body.activity
            ],
        )
    if body.kind == ReportKind.REPORT_KIND_FULL:
        conn.execute(
            _ZERO_UNNAMED_ACTIVITY,
            {
                "zero_child": report.child_id,
                "window_start": date.fromisoformat(body.window_start_day),
                "window_end": date.fromisoformat(body.window_end_day),
                "new_revision": revision,
            },
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

    Each report that changes figures gets a metric revision of its own, so a FULL report zeroes exactly the keys of
    its window that it did not name, also when an earlier report of the same child is in the same batch. The buckets of
    consecutive incremental reports go to the driver in one executemany.
    """
    if not reports:
        return
    upsert = _CHILD_BUCKET_UPSERT[conn.dialect.name]
    catalogues_changed = store_child_catalogues(conn, reports)
    # A heartbeat (names no figures) writes none and takes no revision: the revision moving is what makes this
    # node's own sender report, and a heartbeat must not travel up the tree as a report at every level.
    changing = [report for report in reports if report.changes_figures]
    if not changing and not catalogues_changed:
        return
    # Changed register figures alone also take a revision: this node's next report carries them up.
    revision = next_revision(conn, len(changing) or 1) - len(changing)
    if catalogues_changed:
        next_catalogue_revision(conn)  # after the metric revision row: the lock order of both counters
    if not changing:
        return
    pending: list[Any] = []
    touched: dict[str, RollupScope] = {}
    for report in changing:
        revision += 1
        body = report.body
        _scope_of(body, touched.setdefault(report.child_id, RollupScope()))
        pending.extend(_bucket_rows(conn, upsert, report, revision))
        # Activity counts are few (directives and measures, not cases): applied per report, in order.
        _apply_activity(conn, report, revision)
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
    # The month roll-up follows the day buckets in the same transaction, once per child and batch.
    for child_id, scope in sorted(touched.items()):
        refresh_child_months(conn, child_id, scope)


def _scope_of(body: Any, scope: RollupScope) -> None:
    """What applying this report may change in the roll-up: its buckets' keys; a FULL report's whole window."""
    # Buckets share few days: each day is parsed once.
    by_day: dict[str, set[tuple[str, str]]] = {}
    for bucket in body.buckets:
        keys = by_day.get(bucket.day)
        if keys is None:
            keys = by_day[bucket.day] = set()
        keys.add((bucket.basic_code, bucket.item_type_code))
    for day, keys in by_day.items():
        scope.add_keys(date.fromisoformat(day), keys)
    if body.kind == ReportKind.REPORT_KIND_FULL:
        scope.add_window(date.fromisoformat(body.window_start_day), date.fromisoformat(body.window_end_day))


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
