"""Operator notices: the node's own problems (outbox full, silent children, refused reports, expiring certificates).

Case warnings go to the departments responsible (node.notify.dispatcher). A problem of the node itself goes to the
people who run it, ``notifications.operators`` in the config, over the same channels and through the same durable
``notifications`` rows (no alert attached), so it is retried like any notification and listed by
``supnet notifications``. The log channel always gets it.

A lasting problem (a parent down for a day fills the outbox at every report) is sent once per
``operator_notice_cooldown_seconds`` for each (kind, about); the occurrences in between are counted and the next
notice says how many there were.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, and_, delete, insert, select, update

from node.notify.dispatcher import pending_notification
from node.notify.routing import route_operators
from node.store import Notification, OperatorNotice, dialect_insert

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

_notices = cast(Table, OperatorNotice.__table__)
_notifications = cast(Table, Notification.__table__)
_SMS_LIMIT = 140


class NoticeKind(StrEnum):
    """What went wrong at the node (stable values: they key the cooldown and appear in webhook payloads)."""

    OUTBOX_OVERFLOW = "outbox_overflow"
    CHILD_SILENT = "child_silent"
    CERTIFICATE = "certificate"
    # The parent refuses this node's reports (history rewritten after a restore, clock skew): an operator acts.
    REPORT_REFUSED = "report_refused"
    # This node refuses a child's reports for a reason only the child's operator can fix.
    CHILD_REPORT_REFUSED = "child_report_refused"
    # Directives (node.directives): one received, answered, late, escalated, or refused by the next hop.
    DIRECTIVE_RECEIVED = "directive_received"
    DIRECTIVE_RESPONDED = "directive_responded"
    DIRECTIVE_OVERDUE = "directive_overdue"
    DIRECTIVE_ESCALATED = "directive_escalated"
    DIRECTIVE_REFUSED = "directive_refused"
    # A spot check (node.spotcheck) of a descendant found figures its records do not back.
    SPOT_CHECK_FINDING = "spot_check_finding"


def notify_operators(
    node: Node, kind: NoticeKind, about: str, subject: str, text: str, *, now: datetime | None = None
) -> bool:
    """Queue a notice to every operator route, unless (kind, about) was noticed within the cooldown.

    Returns True when queued. One transaction: the cooldown row and the notification rows commit together, so a
    crash never leaves a problem marked as told without the message to tell it.
    """
    with node.engine.begin() as conn:
        return notify_operators_in(conn, node, kind, about, subject=subject, text=text, now=now)


def notify_operators_in(
    conn: Connection, node: Node, kind: NoticeKind, about: str, *, subject: str, text: str, now: datetime | None = None
) -> bool:
    """``notify_operators`` inside the caller's transaction: the notice commits (or rolls back) with what caused it."""
    now = now or node.now()
    config = node.config.notifications
    cutoff = now - timedelta(seconds=config.operator_notice_cooldown_seconds)
    key = and_(_notices.c.kind == kind.value, _notices.c.about == about)
    # A write first: on SQLite it takes the write lock before anything is read (no stale snapshot to upgrade).
    within_cooldown = conn.execute(
        update(_notices).where(key, _notices.c.last_sent_at > cutoff).values(suppressed=_notices.c.suppressed + 1)
    ).rowcount
    if within_cooldown:
        log.debug("operator notice %s about %s within its cooldown; counted, not re-sent", kind.value, about)
        return False
    previous = conn.execute(select(_notices.c.last_sent_at, _notices.c.suppressed).where(key)).first()
    upsert = dialect_insert(conn, _notices).values(
        kind=kind.value, about=about, first_at=now, last_sent_at=now, suppressed=0
    )
    claimed = conn.execute(
        upsert.on_conflict_do_update(
            index_elements=[_notices.c.kind, _notices.c.about],
            set_={"last_sent_at": now, "suppressed": 0},
            where=_notices.c.last_sent_at <= cutoff,
        ).returning(_notices.c.kind)
    ).first()
    if claimed is None:  # a concurrent notice of the same problem got there first
        return False
    if previous is not None and previous.suppressed:
        text += (
            f"\n(it happened {previous.suppressed} more time(s) since the last notice at "
            f"{previous.last_sent_at:%Y-%m-%d %H:%M:%S})"
        )
    rows = _notification_rows(node, kind, about, subject, text, now=now)
    conn.execute(insert(_notifications), rows)
    log.warning(
        "node %s: operator notice %s about %s queued (%s routes): %s", node.config.id, kind, about, len(rows), subject
    )
    return True


def notify_operators_resolved(
    node: Node, kind: NoticeKind, about: str, subject: str, text: str, *, now: datetime | None = None
) -> bool:
    """The problem (kind, about) is over: if operators were told of it, tell them so and forget it.

    Returns True when a notice was queued. Forgetting it means a new occurrence is told at once, cooldown or not.
    """
    now = now or node.now()
    key = and_(_notices.c.kind == kind.value, _notices.c.about == about)
    with node.engine.connect() as conn:  # the common case (nothing was told) stays a read
        if conn.execute(select(_notices.c.kind).where(key)).first() is None:
            return False
    with node.engine.begin() as conn:
        if not conn.execute(delete(_notices).where(key)).rowcount:
            return False  # a concurrent check resolved it first
        rows = _notification_rows(node, kind, about, subject, text, now=now, resolved=True)
        conn.execute(insert(_notifications), rows)
    log.warning("node %s: operator notice %s about %s resolved: %s", node.config.id, kind, about, subject)
    return True


def _notification_rows(
    node: Node, kind: NoticeKind, about: str, subject: str, text: str, *, now: datetime, resolved: bool = False
) -> list[dict[str, Any]]:
    node_id = node.config.id
    full_subject = f"[supnet {node_id}] {subject}"
    rows = []
    for route in route_operators(node.config.notifications):
        if route.channel == "webhook":
            body = json.dumps(
                {
                    "type": "supnet.operator_notice",
                    "node_id": node_id,
                    "kind": kind.value,
                    "about": about,
                    "resolved": resolved,
                    "subject": subject,
                    "text": text,
                    "at": now.replace(tzinfo=node.tz).isoformat(),
                    "recipient": route.name,
                },
                ensure_ascii=False,
                sort_keys=True,
            )
        elif route.channel == "sms":
            body = f"supnet {node_id}: {subject}"[:_SMS_LIMIT]
        else:
            body = text
        rows.append(pending_notification(None, route, full_subject, body, now))
    return rows
