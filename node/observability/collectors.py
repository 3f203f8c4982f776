"""Scrape-time metrics read from the node's tables: the outbox, children, alerts, notifications, activity counts.

What the database holds is read when Prometheus scrapes, in one short read transaction, so these figures are
right whichever process wrote them (``supnet serve``, a ``supnet import`` or ``supnet scan`` beside it) and
survive a restart. Times are the node's (naive local times in its zone, like every table); ages are measured
on the node's clock. A database that cannot be read gives ``supnet_database_up 0`` and none of the table figures,
never a failed scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Table, func, select
from sqlalchemy.exc import SQLAlchemyError

from federation import OUTBOX_PENDING, outbox_table
from node.reporting import children_status, outbox_overflow_count
from node.store import Alert, Notification, current_revision
from node.supervision import activity_totals

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

# Alert statuses still waiting for someone (docs/domain.md: raised → notified → acknowledged → corrected/escalated).
OPEN_ALERT_STATUSES = ("raised", "notified", "acknowledged")
NOTIFICATION_STATUSES = ("pending", "delivered", "failed")
CHILD_STATES = ("fresh", "stale", "missing")

Family = GaugeMetricFamily | CounterMetricFamily

_alerts = cast(Table, Alert.__table__)
_notifications = cast(Table, Notification.__table__)


class NodeTableCollector(Collector):
    """The table-backed figures of one node, computed at each scrape."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._failing = False  # log a failing database once per failure streak, not at every scrape

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not touch the database.
        return [*self._families().values(), _database_up(1)]

    def _families(self) -> dict[str, Family]:
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        child, rule = ["child"], ["rule", "severity"]
        return {
            "pending": gauge("supnet_report_outbox_pending", "Reports in the outbox awaiting the parent's ack"),
            "limit": gauge("supnet_report_outbox_limit", "Outbox bound (federation.outbox_max_reports)"),
            "oldest": gauge(
                "supnet_report_outbox_oldest_pending_age_seconds",
                "Age of the oldest unacknowledged report on the node's clock (0 when none waits)",
            ),
            "attempts": gauge(
                "supnet_report_outbox_failed_attempts", "Failed delivery attempts of the reports still pending"
            ),
            "overflows": counter(
                "supnet_report_outbox_overflows", "Reports refused because the outbox was full (data stays in buckets)"
            ),
            "sequence": gauge("supnet_report_last_sequence", "Sequence number of the newest report built"),
            "built": gauge(
                "supnet_report_last_built_timestamp_seconds",
                "When the newest report was signed into the outbox for the parent (sent at once when it is reachable)",
            ),
            "acked": gauge(
                "supnet_report_last_acknowledged_timestamp_seconds", "When the parent last acknowledged a report"
            ),
            "child_age": gauge(
                "supnet_child_last_report_age_seconds", "Seconds since each child's last report arrived", labels=child
            ),
            "child_sequence": gauge(
                "supnet_child_last_report_sequence", "Sequence of each child's last report", labels=child
            ),
            "child_state": gauge(
                "supnet_child_state",
                "1 for each child's current state: fresh, stale or missing",
                labels=[*child, "state"],
            ),
            "stale_after": gauge(
                "supnet_child_stale_after_seconds",
                "Silence after which a child counts as stale (its subtree unreported)",
            ),
            "alerts": counter("supnet_alerts_raised", "Alerts (cards) raised, by rule and severity", labels=rule),
            "alerts_open": gauge(
                "supnet_alerts_open",
                "Alerts raised, notified or acknowledged, not yet corrected or escalated",
                labels=rule,
            ),
            "notifications": gauge(
                "supnet_notifications", "Notifications by status: pending, delivered, failed", labels=["status"]
            ),
            "notifications_oldest": gauge(
                "supnet_notifications_oldest_pending_age_seconds", "Age of the oldest pending notification (0: none)"
            ),
            "activity": gauge(
                "supnet_supervision_activity",
                "Supervision activity counted at this node (directives by kind, measures by kind), all days",
                labels=["metric", "kind"],
            ),
            "revision": gauge("supnet_metric_revision", "The node's metric revision (moves with every figure change)"),
        }

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        try:
            with self._node.engine.connect() as conn:
                self._fill(conn, families)
        except SQLAlchemyError as error:
            if not self._failing:
                log.warning("metrics: the database of %s cannot be read: %s", self._node.config.id, error)
            self._failing = True
            yield _database_up(0)
            return
        if self._failing:
            log.info("metrics: the database of %s can be read again", self._node.config.id)
        self._failing = False
        yield _database_up(1)
        yield from families.values()

    def _seconds(self, value: datetime) -> float:
        """A stored node-local time as Unix seconds."""
        return value.replace(tzinfo=self._node.tz).timestamp()

    def _fill(self, conn: Connection, families: dict[str, Family]) -> None:
        node = self._node
        now = node.now()
        federation = node.config.federation
        o = outbox_table.c
        pending = conn.execute(
            select(func.count(), func.min(o.created_at), func.coalesce(func.sum(o.attempts), 0)).where(
                o.status == OUTBOX_PENDING
            )
        ).one()
        _gauge(families["pending"], pending[0])
        _gauge(families["limit"], federation.outbox_max_reports)
        _gauge(families["oldest"], max((now - pending[1]).total_seconds(), 0.0) if pending[1] else 0.0)
        _gauge(families["attempts"], pending[2])
        families["overflows"].add_metric([], outbox_overflow_count(node))
        head = conn.execute(select(func.max(o.sequence), func.max(o.created_at), func.max(o.acked_at))).one()
        _gauge(families["sequence"], head[0] or 0)
        if head[1] is not None:
            _gauge(families["built"], self._seconds(head[1]))
        if head[2] is not None:
            _gauge(families["acked"], self._seconds(head[2]))
        for child in children_status(node, conn, now):
            if child.age_seconds is not None:
                families["child_age"].add_metric([child.child_id], max(child.age_seconds, 0.0))
                families["child_sequence"].add_metric([child.child_id], child.last_sequence or 0)
            for state in CHILD_STATES:
                families["child_state"].add_metric([child.child_id, state], 1.0 if child.state == state else 0.0)
        _gauge(families["stale_after"], federation.report_interval_seconds * federation.stale_after_intervals)
        a = _alerts.c
        raised: dict[tuple[str, str], int] = {}
        still_open: dict[tuple[str, str], int] = {}
        for rule_id, severity, status, count in conn.execute(
            select(a.rule_id, a.severity, a.status, func.count()).group_by(a.rule_id, a.severity, a.status)
        ):
            key = (rule_id, severity)
            raised[key] = raised.get(key, 0) + count
            still_open[key] = still_open.get(key, 0) + (count if status in OPEN_ALERT_STATUSES else 0)
        for key in sorted(raised):
            families["alerts"].add_metric(list(key), raised[key])
            families["alerts_open"].add_metric(list(key), still_open[key])
        n = _notifications.c
        by_status = {
            str(status): int(count) for status, count in conn.execute(select(n.status, func.count()).group_by(n.status))
        }
        for status in sorted({*NOTIFICATION_STATUSES, *by_status}):
            families["notifications"].add_metric([status], by_status.get(status, 0))
        oldest = conn.execute(select(func.min(n.created_at)).where(n.status == "pending")).scalar_one_or_none()
        _gauge(families["notifications_oldest"], max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        for (metric, kind), count in sorted(activity_totals(conn).items()):
            families["activity"].add_metric([metric, kind], count)
        _gauge(families["revision"], current_revision(conn))


def _gauge(family: Family, value: float) -> None:
    family.add_metric([], value)


def _database_up(value: int) -> Metric:
    return GaugeMetricFamily("supnet_database_up", "1 when this scrape could read the node's database", value=value)
