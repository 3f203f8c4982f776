"""Subtree roll-up: totals = own metric buckets + Σ children's latest reported buckets; children's freshness.

Supervision activity counts roll up the same way: own ``activity_counts`` + Σ children's latest
``child_activity_counts``, per (day, metric, kind) (``subtree_activity``).

Upward keys are (day, basic_code, item_type_code) — never node or department — so this query serves the
report builder (changed keys or a day window) and ``supnet subtree`` / ``supnet stats --subtree`` alike.
A child is *fresh* if it reported within stale_after_intervals × report_interval_seconds, *stale* if it
reported before that, *missing* if it never reported; stale and missing children count in
nodes_in_subtree (their last known count, or 1) but not in nodes_reported_in_window.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import Connection, Select, Table, and_, bindparam, func, literal, select, union, union_all

from federation import COUNTER_FIELDS, ChildChainState, load_child_chains
from node.errors import InvalidArgumentError
from node.store import ActivityCount, ChildActivityCount, ChildBucket, MetricBucket

if TYPE_CHECKING:
    from node.app import Node

metric_buckets = cast(Table, MetricBucket.__table__)
child_buckets = cast(Table, ChildBucket.__table__)
activity_counts = cast(Table, ActivityCount.__table__)
child_activity_counts = cast(Table, ChildActivityCount.__table__)

KEY_COLUMNS = ("day", "basic_code", "item_type_code")
ACTIVITY_KEY_COLUMNS = ("day", "metric", "kind")
# Dimensions `supnet subtree --by` accepts; "source" is 'own' or the child id (who contributed the value).
GROUP_DIMENSIONS = ("day", "basic_code", "item_type_code", "source")
OWN_SOURCE = "own"

ChildState = Literal["fresh", "stale", "missing"]


@dataclass(frozen=True, slots=True)
class BucketTotals:
    """Subtree totals of one upward key: every counter in COUNTER_FIELDS order."""

    day: date
    basic_code: str
    item_type_code: str
    counters: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ActivityTotals:
    """Subtree total of one supervision-activity key (day, metric, kind)."""

    day: date
    metric: str
    kind: str
    count: int


@dataclass(frozen=True, slots=True)
class ChildStatus:
    """One child as the parent sees it now."""

    child_id: str
    state: ChildState
    registered: bool
    last_sequence: int | None
    last_received_at: datetime | None
    age_seconds: float | None
    nodes_in_subtree: int
    nodes_reported_in_window: int


@dataclass(frozen=True, slots=True)
class Completeness:
    """Reporting completeness as additive counts (the node itself included)."""

    nodes_in_subtree: int
    nodes_reported_in_window: int

    @property
    def ratio(self) -> float:
        """nodes_reported_in_window / nodes_in_subtree (derived where shown, never reported)."""
        return self.nodes_reported_in_window / self.nodes_in_subtree if self.nodes_in_subtree else 0.0


@dataclass(frozen=True, slots=True)
class SubtreeView:
    """What ``supnet subtree`` shows: grouped totals, completeness and each child's freshness."""

    node_id: str
    generated_at: datetime
    group_by: tuple[str, ...]
    rows: list[dict[str, Any]]
    completeness: Completeness
    children: list[ChildStatus] = field(default_factory=list)


def stale_after(node: Node) -> timedelta:
    """How long a child may stay silent before it counts as stale."""
    federation = node.config.federation
    return timedelta(seconds=federation.stale_after_intervals * federation.report_interval_seconds)


def children_status(node: Node, conn: Connection, now: datetime | None = None) -> list[ChildStatus]:
    """Freshness of every registered child (and of any child that reported but is no longer registered)."""
    moment = now or node.now()
    window = stale_after(node)
    chains = load_child_chains(conn)
    registered = [child.id for child in node.config.federation.children]
    statuses = []
    for child_id in sorted(set(registered) | set(chains)):
        statuses.append(_status_of(child_id, chains.get(child_id), child_id in registered, moment, window))
    return statuses


def _status_of(
    child_id: str, chain: ChildChainState | None, registered: bool, now: datetime, window: timedelta
) -> ChildStatus:
    if chain is None:
        return ChildStatus(child_id, "missing", registered, None, None, None, 1, 0)
    age = now - chain.last_received_at
    fresh = age <= window
    return ChildStatus(
        child_id=child_id,
        state="fresh" if fresh else "stale",
        registered=registered,
        last_sequence=chain.last_sequence,
        last_received_at=chain.last_received_at,
        age_seconds=age.total_seconds(),
        nodes_in_subtree=max(chain.nodes_in_subtree, 1),
        nodes_reported_in_window=chain.nodes_reported_in_window if fresh else 0,
    )


def subtree_completeness(statuses: Sequence[ChildStatus]) -> Completeness:
    """1 (this node) + Σ children's counts, stale and missing children reporting 0."""
    return Completeness(
        nodes_in_subtree=1 + sum(status.nodes_in_subtree for status in statuses),
        nodes_reported_in_window=1 + sum(status.nodes_reported_in_window for status in statuses),
    )


def _key_match(table: Table, keys: Any) -> Any:
    return and_(*(table.c[name] == keys.c[name] for name in KEY_COLUMNS))


def _source_selects(
    *, changed: bool, bounded_from: bool, bounded_to: bool, by_basic_code: bool, with_source: bool = False
) -> list[Select[Any]]:
    """One SELECT per source table (own, children) with the key columns and every counter column.

    Values come as bind parameters (``_bound``): since, day_from, day_to, basic_code.
    """
    changed_keys = None
    if changed:
        # Keys touched since the revision, in either table; their totals are re-read from both tables.
        changed_keys = union(
            *(
                select(*(table.c[name] for name in KEY_COLUMNS)).where(table.c.revision > bindparam("since"))
                for table in (metric_buckets, child_buckets)
            )
        ).cte("changed_keys")
    selects = []
    for table in (metric_buckets, child_buckets):
        source_column = (
            literal(OWN_SOURCE).label("source") if table is metric_buckets else table.c.child_id.label("source")
        )
        columns: list[Any] = [*(table.c[name] for name in KEY_COLUMNS), *(table.c[name] for name in COUNTER_FIELDS)]
        if with_source:
            columns.append(source_column)
        query = select(*columns)
        if changed_keys is not None:
            query = query.select_from(table.join(changed_keys, _key_match(table, changed_keys)))
        if bounded_from:
            query = query.where(table.c.day >= bindparam("day_from"))
        if bounded_to:
            query = query.where(table.c.day <= bindparam("day_to"))
        if by_basic_code:
            query = query.where(table.c.basic_code == bindparam("basic_code"))
        selects.append(query)
    return selects


def _bound(
    changed_since: int | None, day_from: date | None, day_to: date | None, basic_code: str | None
) -> dict[str, Any]:
    """The bind parameters of ``_source_selects`` that are given."""
    values = {"since": changed_since, "day_from": day_from, "day_to": day_to, "basic_code": basic_code}
    return {name: value for name, value in values.items() if value is not None}


@functools.cache
def _bucket_statement(changed: bool, bounded_from: bool, bounded_to: bool, by_basic_code: bool) -> Select[Any]:
    """The roll-up query of the buckets with bind parameters, built once per shape (a report's hot path)."""
    parts = _source_selects(
        changed=changed, bounded_from=bounded_from, bounded_to=bounded_to, by_basic_code=by_basic_code
    )
    both = union_all(*parts).subquery("subtree_sources")
    keys = [both.c[name] for name in KEY_COLUMNS]
    return (
        select(*keys, *(func.sum(both.c[name]).label(name) for name in COUNTER_FIELDS)).group_by(*keys).order_by(*keys)
    )


def _as_date(value: Any) -> date:
    # SQLite may hand a UNION's Date column back as text; PostgreSQL gives a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def subtree_buckets(
    conn: Connection,
    *,
    changed_since: int | None = None,
    day_from: date | None = None,
    day_to: date | None = None,
    basic_code: str | None = None,
) -> list[BucketTotals]:
    """Subtree totals per (day, basic_code, item_type_code), sorted by key.

    ``changed_since``: only keys whose own or child bucket changed after that metric revision (the
    incremental report); the day bounds restrict to a window (the full report, the CLI).
    """
    query = _bucket_statement(
        changed_since is not None, day_from is not None, day_to is not None, basic_code is not None
    )
    return [
        BucketTotals(
            day=_as_date(row[0]),
            basic_code=row[1],
            item_type_code=row[2],
            counters=tuple(int(value or 0) for value in row[3:]),
        )
        for row in conn.execute(query, _bound(changed_since, day_from, day_to, basic_code))
    ]


@functools.cache
def _activity_statement(changed: bool, bounded_from: bool, bounded_to: bool) -> Select[Any]:
    """The roll-up query of the activity counts with bind parameters, built once per shape (a report's hot path)."""
    changed_keys = None
    if changed:
        changed_keys = union(
            *(
                select(*(table.c[name] for name in ACTIVITY_KEY_COLUMNS)).where(table.c.revision > bindparam("since"))
                for table in (activity_counts, child_activity_counts)
            )
        ).cte("changed_activity")
    parts = []
    for table in (activity_counts, child_activity_counts):
        query = select(*(table.c[name] for name in ACTIVITY_KEY_COLUMNS), table.c["count"])
        if changed_keys is not None:
            match = and_(*(table.c[name] == changed_keys.c[name] for name in ACTIVITY_KEY_COLUMNS))
            query = query.select_from(table.join(changed_keys, match))
        if bounded_from:
            query = query.where(table.c.day >= bindparam("day_from"))
        if bounded_to:
            query = query.where(table.c.day <= bindparam("day_to"))
        parts.append(query)
    both = union_all(*parts).subquery("subtree_activity")
    keys = [both.c[name] for name in ACTIVITY_KEY_COLUMNS]
    return select(*keys, func.sum(both.c["count"])).group_by(*keys)


def subtree_activity(
    conn: Connection,
    *,
    changed_since: int | None = None,
    day_from: date | None = None,
    day_to: date | None = None,
) -> list[ActivityTotals]:
    """Subtree activity per (day, metric, kind), sorted by key: own counts + every child's latest.

    ``changed_since``: only keys whose own or child count changed after that metric revision (the incremental
    report); the day bounds restrict to a window (the full report). Mirrors ``subtree_buckets``.
    """
    statement = _activity_statement(changed_since is not None, day_from is not None, day_to is not None)
    parameters = {"since": changed_since, "day_from": day_from, "day_to": day_to}
    totals = [
        ActivityTotals(day=_as_date(row[0]), metric=row[1], kind=row[2], count=int(row[3] or 0))
        for row in conn.execute(statement, {name: value for name, value in parameters.items() if value is not None})
    ]
    # Sorted here, by code point: a kind is Chinese text (a measure), which a PostgreSQL collation orders otherwise.
    return sorted(totals, key=lambda total: (total.day, total.metric, total.kind))


def subtree_totals(
    conn: Connection,
    *,
    group_by: Sequence[str] = ("basic_code", "item_type_code"),
    day_from: date | None = None,
    day_to: date | None = None,
    basic_code: str | None = None,
) -> list[dict[str, Any]]:
    """Subtree totals grouped by any of day, basic_code, item_type_code, source; one dict per group."""
    unknown = [name for name in group_by if name not in GROUP_DIMENSIONS]
    if unknown:
        raise InvalidArgumentError(
            f"cannot group subtree totals by {', '.join(unknown)}; choose from {', '.join(GROUP_DIMENSIONS)}"
        )
    parts = _source_selects(
        changed=False,
        bounded_from=day_from is not None,
        bounded_to=day_to is not None,
        by_basic_code=basic_code is not None,
        with_source=True,
    )
    both = union_all(*parts).subquery("subtree_sources")
    keys = [both.c[name] for name in group_by]
    query = select(*keys, *(func.sum(both.c[name]).label(name) for name in COUNTER_FIELDS))
    if keys:
        query = query.group_by(*keys).order_by(*keys)
    rows = []
    for row in conn.execute(query, _bound(None, day_from, day_to, basic_code)).mappings():
        values: dict[str, Any] = {}
        for name in group_by:
            values[name] = _as_date(row[name]).isoformat() if name == "day" else row[name]
        values.update({name: int(row[name] or 0) for name in COUNTER_FIELDS})
        rows.append(values)
    # Without grouping, SUM over no rows still yields the one (all-zero) total row.
    return rows


def subtree_view(
    node: Node,
    *,
    group_by: Sequence[str] = ("basic_code", "item_type_code"),
    day_from: date | None = None,
    day_to: date | None = None,
    basic_code: str | None = None,
) -> SubtreeView:
    """Everything ``supnet subtree`` shows, read in one transaction."""
    now = node.now()
    with node.engine.connect() as conn:
        rows = subtree_totals(conn, group_by=group_by, day_from=day_from, day_to=day_to, basic_code=basic_code)
        statuses = children_status(node, conn, now)
    return SubtreeView(
        node_id=node.config.id,
        generated_at=now,
        group_by=tuple(group_by),
        rows=rows,
        completeness=subtree_completeness(statuses),
        children=statuses,
    )
