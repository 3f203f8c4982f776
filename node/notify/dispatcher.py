r"""The notification dispatcher: raised alerts → one notification row per (channel, recipient) → delivery with retries.

Life of a notification row (table ``notifications``)::

    pending --(sent)--> delivered
       |  \\--(failed, attempts < max_attempts)--> pending, next_attempt_at = now + backoff
       \\----(failed, attempts == max_attempts)--> failed   (logged at ERROR, listed, counted; never deleted;
                                                           ``requeue_failed`` puts it back to pending)

Backoff after the k-th failed attempt (k = attempts before it, from 0): ``min(max_backoff, backoff * 2**k)`` plus up to
10% random jitter, so many rows failing together do not retry in lock-step.

Enqueueing is idempotent: rows are inserted with ON CONFLICT DO NOTHING on UNIQUE(alert_id, channel, recipient), and
only alerts with no notification yet are considered. When every notification of an alert is delivered the alert moves
'raised' → 'notified' (never from any other status, so an alert acknowledged meanwhile keeps its status).

Delivery is at-least-once: rows are claimed in chunks (next_attempt_at pushed past a lease) before they are sent, so
two dispatchers never send one twice at the same time, and a crash between sending and recording re-sends it after
the lease. Receivers can de-duplicate on the notification id (webhook/SMS header ``X-Supnet-Notification-Id``, mail
Message-ID). No database transaction is held open while talking to a remote server.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, RowMapping, Table, and_, bindparam, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from node.audit_log import Action, operator_actor, record_audit
from node.errors import InvalidArgumentError, UnavailableError
from node.notify.channels import Channel, OutgoingMessage, build_channels
from node.notify.messages import AlertFacts, format_for_channel
from node.notify.routing import UNROUTED_PREFIX, Route, route_alert
from node.store import Alert, Case, Complaint, Notification

if TYPE_CHECKING:
    from node.app import Node

__all__ = [
    "DeliveryOutcome",
    "DispatchResult",
    "NotificationDispatcher",
    "NotificationView",
    "list_notifications",
    "notification_counts",
    "requeue_failed",
]

log = logging.getLogger("supnet.notify")

ALERT_BATCH = 500
DELIVERY_CHUNK = 25
JITTER_RATIO = 0.10

# Core tables (typed as Table for mypy): the dispatcher works with Core statements and row mappings.
_alerts = cast(Table, Alert.__table__)
_notifications = cast(Table, Notification.__table__)
_cases = cast(Table, Case.__table__)
_complaints = cast(Table, Complaint.__table__)


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one ``deliver_due`` pass did."""

    attempted: int = 0
    delivered: int = 0
    retry_scheduled: int = 0
    failed: int = 0
    alerts_notified: int = 0


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """What one dispatch run did, and what is left: ``pending`` still to deliver, ``failed`` given up (all time)."""

    enqueued: int
    attempted: int
    delivered: int
    retry_scheduled: int
    failed_now: int
    alerts_notified: int
    pending: int
    failed: int

    def as_dict(self) -> dict[str, int]:
        """Plain dict for JSON output."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class NotificationView:
    """One notification row as listed to operators."""

    id: int
    alert_id: int | None
    channel: str
    recipient: str
    subject: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    delivered_at: datetime | None


# Prepared once: the statements of the delivery loop (bind names differ from columns, as SQLAlchemy requires).
_DUE = (
    select(_notifications)
    .where(
        _notifications.c.status == "pending",
        _notifications.c.next_attempt_at <= bindparam("b_now"),
        _notifications.c.id > bindparam("b_after"),
    )
    .order_by(_notifications.c.id)
    .limit(bindparam("b_limit"))
)
_RECORD_OUTCOME = (
    update(_notifications)
    .where(_notifications.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        last_error=bindparam("b_error"),
        delivered_at=bindparam("b_delivered_at"),
    )
)


def _outcome(
    notification_id: int,
    status: str,
    attempts: int,
    next_attempt_at: datetime,
    error: str,
    *,
    delivered_at: datetime | None,
) -> dict[str, Any]:
    return {
        "b_id": notification_id,
        "b_status": status,
        "b_attempts": attempts,
        "b_next": next_attempt_at,
        "b_error": error,
        "b_delivered_at": delivered_at,
    }


@dataclass(slots=True)
class _Totals:
    """Running counts of one delivery pass."""

    attempted: int = 0
    delivered: int = 0
    retry_scheduled: int = 0
    failed: int = 0
    alerts_notified: int = 0


def pending_notification(alert_id: int | None, route: Route, subject: str, body: str, now: datetime) -> dict[str, Any]:
    """A new ``notifications`` row, due at once: a case alert's (alert_id) or an operator notice's (None)."""
    return {
        "alert_id": alert_id,
        "channel": route.channel,
        "recipient": route.recipient,
        "subject": subject[:300],
        "body": body,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": "",
        "created_at": now,
        "delivered_at": None,
    }


def backoff_delay(attempts_before: int, backoff: float, max_backoff: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after a failed attempt: min(max_backoff, backoff * 2**attempts_before) plus up to 10% jitter."""
    base = min(max_backoff, backoff * (2 ** min(attempts_before, 62)))
    jitter = (rng or random).uniform(0.0, JITTER_RATIO * base)
    return float(base + jitter)


def _insert_ignoring_conflicts(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT (alert_id, channel, recipient) DO NOTHING for the connection's dialect."""
    keys = ["alert_id", "channel", "recipient"]
    if conn.dialect.name == "postgresql":
        return postgresql.insert(_notifications).on_conflict_do_nothing(index_elements=keys)
    return sqlite.insert(_notifications).on_conflict_do_nothing(index_elements=keys)


class NotificationDispatcher:
    """Turns raised alerts into notifications and delivers them; ``start()`` runs it in a background thread."""

    def __init__(
        self,
        node: Node,
        *,
        channels: Mapping[str, Channel] | None = None,
        interval_seconds: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.config = node.config.notifications
        self.channels: Mapping[str, Channel] = (
            channels if channels is not None else build_channels(self.config, node.data_dir)
        )
        self.interval_seconds = (
            interval_seconds if interval_seconds is not None else self.config.dispatch_interval_seconds
        )
        self._rng = rng or random.Random()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        # One run at a time per dispatcher: the background loop and a manual run_once must not interleave.
        self._run_lock = threading.Lock()
        # A claimed row is left alone by other dispatchers for this long: past the time a whole chunk can take when
        # every send runs into its timeout (SMTP may hit it twice: connect, then a command).
        self.lease = timedelta(seconds=60.0 + 2 * DELIVERY_CHUNK * self.config.timeout_seconds)

    # -- enqueue -----------------------------------------------------------------------------------------------------
    def enqueue_pending_alerts(self, now: datetime | None = None) -> int:
        """Create the notification rows of every 'raised' alert that has none yet; returns how many rows were added."""
        now = now or self.node.now()
        added = 0
        last_id = 0
        while True:
            with self.node.engine.begin() as conn:
                rows = self._raised_without_notifications(conn, last_id)
                if not rows:
                    break
                values: list[dict[str, Any]] = []
                for row in rows:
                    values.extend(self._rows_for_alert(AlertFacts.from_row(row), now))
                added += len(
                    conn.execute(_insert_ignoring_conflicts(conn).returning(_notifications.c.id), values).all()
                )
                last_id = rows[-1]["id"]
            if len(rows) < ALERT_BATCH:
                break
        if added:
            log.info("enqueued %s notifications for raised alerts", added)
        return added

    def _raised_without_notifications(self, conn: Connection, after_id: int) -> Sequence[RowMapping]:
        has_notification = exists().where(_notifications.c.alert_id == _alerts.c.id)
        query = (
            select(
                _alerts,
                _cases.c.promised_due_at,
                _cases.c.legal_due_at,
                _complaints.c.decision_due_at,
            )
            .select_from(
                _alerts.outerjoin(_cases, _cases.c.case_no == _alerts.c.case_no).outerjoin(
                    _complaints, _complaints.c.complaint_no == _alerts.c.complaint_no
                )
            )
            .where(_alerts.c.status == "raised", _alerts.c.id > after_id, ~has_notification)
            .order_by(_alerts.c.id)
            .limit(ALERT_BATCH)
        )
        return conn.execute(query).mappings().all()

    def _rows_for_alert(self, facts: AlertFacts, now: datetime) -> list[dict[str, Any]]:
        routes = route_alert(self.config, facts.department, facts.post)
        values = []
        for route in routes:
            if route.recipient.startswith(UNROUTED_PREFIX):
                log.warning(
                    "alert %s (%s, department %r, post %r) matches no notification recipient; logging it only",
                    facts.alert_id,
                    facts.rule_id,
                    facts.department,
                    facts.post,
                )
            subject, body = format_for_channel(
                facts, route.channel, node_id=self.node.config.id, recipient_name=route.name, tz=self.node.tz
            )
            values.append(pending_notification(facts.alert_id, route, subject, body, now))
        return values

    # -- deliver -----------------------------------------------------------------------------------------------------
    def deliver_due(self, now: datetime | None = None) -> DeliveryOutcome:
        """Send every pending notification whose next_attempt_at <= now; record success, retry or failure of each.

        Rows go in chunks of DELIVERY_CHUNK: one UPDATE claims a chunk, its rows are sent one by one, and one
        transaction records the chunk's outcomes and moves its fully delivered alerts to 'notified'.
        """
        clock: Callable[[], datetime] = (lambda: now) if now is not None else self.node.now
        started = clock()
        totals = _Totals()
        after_id = 0
        while True:
            with self.node.engine.begin() as conn:
                due = (
                    conn.execute(_DUE, {"b_now": started, "b_after": after_id, "b_limit": DELIVERY_CHUNK})
                    .mappings()
                    .all()
                )
            if not due:
                break
            after_id = due[-1]["id"]
            claimed = self._claim([row["id"] for row in due], clock())
            outcomes = [(row, self._send(row)) for row in due if row["id"] in claimed]
            if outcomes:
                self._record(outcomes, clock(), totals)
            if len(due) < DELIVERY_CHUNK:
                break
        return DeliveryOutcome(**asdict(totals))

    def _claim(self, ids: Sequence[int], now: datetime) -> set[int]:
        """Push the rows' next attempt past the lease; only rows still due are claimed (not another dispatcher's)."""
        with self.node.engine.begin() as conn:
            claimed = conn.execute(
                update(_notifications)
                .where(
                    _notifications.c.id.in_(list(ids)),
                    _notifications.c.status == "pending",
                    _notifications.c.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + self.lease)
                .returning(_notifications.c.id)
            ).all()
        return {row[0] for row in claimed}

    def _send(self, row: RowMapping) -> str | None:
        """Send one notification; None when delivered, else the error text."""
        channel = self.channels.get(row["channel"])
        if channel is None:
            return f"channel {row['channel']!r} is not available on this node"
        try:
            channel.send(OutgoingMessage(row["id"], row["recipient"], row["subject"], row["body"]))
        except UnavailableError as exc:
            return str(exc)
        except Exception as exc:
            # A bug or an unexpected library error must not lose the row: it is retried and visible like any failure.
            log.exception("notification %s: unexpected error in channel %s", row["id"], row["channel"])
            return f"{type(exc).__name__}: {exc}"[:500]
        return None

    def _record(self, outcomes: Sequence[tuple[RowMapping, str | None]], now: datetime, totals: _Totals) -> None:
        """Store a chunk's outcomes in one transaction and move its fully delivered alerts to 'notified'."""
        params: list[dict[str, Any]] = []
        delivered_alerts: set[int] = set()
        for row, error in outcomes:
            attempts = row["attempts"] + 1
            totals.attempted += 1
            if error is None:
                totals.delivered += 1
                log.info("notification %s delivered via %s to %s", row["id"], row["channel"], row["recipient"])
                params.append(_outcome(row["id"], "delivered", attempts, now, row["last_error"], delivered_at=now))
                if row["alert_id"] is not None:
                    delivered_alerts.add(row["alert_id"])
            elif attempts >= self.config.max_attempts:
                totals.failed += 1
                log.error(
                    "notification %s for alert %s via %s to %s FAILED after %s attempts, giving up: %s",
                    row["id"],
                    row["alert_id"],
                    row["channel"],
                    row["recipient"],
                    attempts,
                    error,
                )
                params.append(_outcome(row["id"], "failed", attempts, now, error, delivered_at=None))
            else:
                totals.retry_scheduled += 1
                delay = backoff_delay(
                    row["attempts"], self.config.backoff_seconds, self.config.max_backoff_seconds, self._rng
                )
                log.warning(
                    "notification %s via %s to %s failed (attempt %s of %s), retry in %.1f s: %s",
                    row["id"],
                    row["channel"],
                    row["recipient"],
                    attempts,
                    self.config.max_attempts,
                    delay,
                    error,
                )
                retry_at = now + timedelta(seconds=delay)
                params.append(_outcome(row["id"], "pending", attempts, retry_at, error, delivered_at=None))
        with self.node.engine.begin() as conn:
            conn.execute(_RECORD_OUTCOME, params)
            if delivered_alerts:
                undelivered = exists().where(
                    _notifications.c.alert_id == _alerts.c.id, _notifications.c.status != "delivered"
                )
                notified = conn.execute(
                    update(_alerts)
                    .where(_alerts.c.id.in_(sorted(delivered_alerts)), _alerts.c.status == "raised", ~undelivered)
                    .values(status="notified", notified_at=now)
                    .returning(_alerts.c.id)
                ).all()
                totals.alerts_notified += len(notified)
                for (alert_id,) in notified:
                    log.info("alert %s notified", alert_id)

    def settle_alerts(self, now: datetime | None = None) -> int:
        """Mark 'notified' every raised alert whose notifications are all delivered; returns how many.

        Delivery marks alerts as it goes; this catches the one it cannot see: two dispatchers delivering the last two
        notifications of one alert at the same moment, each seeing the other's row still pending.
        """
        now = now or self.node.now()
        has_any = exists().where(_notifications.c.alert_id == _alerts.c.id)
        undelivered = exists().where(_notifications.c.alert_id == _alerts.c.id, _notifications.c.status != "delivered")
        with self.node.engine.begin() as conn:
            settled = conn.execute(
                update(_alerts)
                .where(_alerts.c.status == "raised", has_any, ~undelivered)
                .values(status="notified", notified_at=now)
                .returning(_alerts.c.id)
            ).all()
        for (alert_id,) in settled:
            log.info("alert %s notified (settled)", alert_id)
        return len(settled)

    # -- one run, and the background loop -----------------------------------------------------------------------------
    def run_once(self, now: datetime | None = None) -> DispatchResult:
        """Enqueue notifications of raised alerts, deliver what is due, and report what is left."""
        with self._run_lock:
            enqueued = self.enqueue_pending_alerts(now)
            outcome = self.deliver_due(now)
            settled = self.settle_alerts(now)
            counts = notification_counts(self.node)
        return DispatchResult(
            enqueued=enqueued,
            attempted=outcome.attempted,
            delivered=outcome.delivered,
            retry_scheduled=outcome.retry_scheduled,
            failed_now=outcome.failed,
            alerts_notified=outcome.alerts_notified + settled,
            pending=counts.get("pending", 0),
            failed=counts.get("failed", 0),
        )

    def start(self) -> None:
        """Run ``run_once`` every ``interval_seconds`` in a daemon thread until ``stop()``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="supnet-notify", daemon=True)
        self._thread.start()
        log.info("notification dispatcher started (every %s s)", self.interval_seconds)

    def wake(self) -> None:
        """Run the next dispatch now instead of at the end of the interval (e.g. right after a scan)."""
        self._wakeup.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background loop and wait for a run in progress to finish (bounded by the channel timeouts)."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("notification dispatcher still busy after %s s; leaving it to finish", timeout)
            self._thread = None
        log.info("notification dispatcher stopped")

    @property
    def running(self) -> bool:
        """True while the background loop is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                result = self.run_once()
                if result.attempted or result.enqueued:
                    log.info("dispatch: %s", result.as_dict())
            except Exception:
                # The loop must survive a database hiccup; the next run retries everything still pending.
                log.exception("notification dispatch run failed")
            self._wakeup.wait(self.interval_seconds)
            self._wakeup.clear()


# -- listing and operator actions --------------------------------------------------------------------------------------
def notification_counts(node: Node) -> dict[str, int]:
    """Number of notifications per status (pending, delivered, failed)."""
    with node.engine.connect() as conn:
        rows = conn.execute(select(_notifications.c.status, func.count()).group_by(_notifications.c.status)).all()
    return {status: int(count) for status, count in rows}


def list_notifications(
    node: Node, *, pending_only: bool = False, status: str | None = None, limit: int = 200
) -> list[NotificationView]:
    """Notifications, newest first; ``pending_only`` shows what is not delivered yet (pending and failed)."""
    query = select(_notifications).order_by(_notifications.c.id.desc()).limit(limit)
    if pending_only:
        query = query.where(_notifications.c.status != "delivered")
    if status is not None:
        if status not in {"pending", "delivered", "failed"}:
            raise InvalidArgumentError(f"status must be pending, delivered or failed, got {status!r}")
        query = query.where(_notifications.c.status == status)
    with node.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        NotificationView(
            id=row["id"],
            alert_id=row["alert_id"],
            channel=row["channel"],
            recipient=row["recipient"],
            subject=row["subject"],
            status=row["status"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            delivered_at=row["delivered_at"],
        )
        for row in rows
    ]


def requeue_failed(node: Node, ids: Sequence[int] | None = None, now: datetime | None = None) -> int:
    """Put failed notifications (all, or the given ids) back to pending with a fresh attempt budget."""
    now = now or node.now()
    condition = _notifications.c.status == "failed"
    if ids is not None:
        condition = and_(condition, _notifications.c.id.in_(list(ids)))
    with node.engine.begin() as conn:
        result = conn.execute(
            update(_notifications).where(condition).values(status="pending", attempts=0, next_attempt_at=now)
        )
        record_audit(
            conn,
            actor=operator_actor(node.config.id),
            action=Action.NOTIFICATION_RETRIED,
            target="notifications",
            detail={"ids": None if ids is None else list(ids), "requeued": int(result.rowcount)},
        )
    log.info("requeued %s failed notifications", result.rowcount)
    return int(result.rowcount)
