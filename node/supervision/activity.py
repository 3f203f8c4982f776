"""Additive supervision activity counts per (day, metric, kind): directives by kind, accountability measures by kind.

Written under the next metric revision, like the buckets, so the next report carries every change upward
(docs/metrics.md names the metrics).
"""

from __future__ import annotations

from datetime import date
from typing import cast

from sqlalchemy import Connection, Table, select

from node.store import ActivityCount, dialect_insert, next_revision

__all__ = ["ACTIVITY_METRICS", "activity_totals", "record_activity"]

_activity = cast(Table, ActivityCount.__table__)

# metric name -> what one count is (the kind says which directive kind or which measure).
ACTIVITY_METRICS: dict[str, str] = {
    "directives_received": "a directive delivered to this node (counted at the target, on the delivery day)",
    "directives_acknowledged": "a directive acknowledged by the target (acknowledgement day)",
    "directives_responded_on_time": "a response made by its due time (response day)",
    "directives_overdue": "a directive whose response time passed without a response (the due day)",
    "directives_closed": "a directive closed by its issuer as accepted (closing day, counted at the target)",
    "measures_recorded": "an accountability measure recorded (decision day; kind = the measure)",
}


def record_activity(conn: Connection, day: date, metric: str, kind: str, count: int = 1) -> int:
    """Add ``count`` to (day, metric, kind) in the caller's transaction; returns the new metric revision."""
    if metric not in ACTIVITY_METRICS:
        raise ValueError(f"unknown activity metric {metric!r}; known: {', '.join(ACTIVITY_METRICS)}")
    revision = next_revision(conn)
    statement = dialect_insert(conn, _activity).values(
        day=day, metric=metric, kind=kind, count=count, revision=revision
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[_activity.c.day, _activity.c.metric, _activity.c.kind],
            set_={"count": _activity.c.count + statement.excluded.count, "revision": statement.excluded.revision},
        )
    )
    return revision


def activity_totals(
    conn: Connection, day_from: date | None = None, day_to: date | None = None
) -> dict[tuple[str, str], int]:
    """Own counts summed over the days, by (metric, kind)."""
    a = _activity.c
    query = select(a.metric, a.kind, a.count)
    if day_from is not None:
        query = query.where(a.day >= day_from)
    if day_to is not None:
        query = query.where(a.day <= day_to)
    totals: dict[tuple[str, str], int] = {}
    for metric, kind, count in conn.execute(query):
        totals[(metric, kind)] = totals.get((metric, kind), 0) + int(count)
    return totals
