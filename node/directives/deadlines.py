"""Late responses (docs/domain.md §8): overdue at the due time, escalated ``escalate_after_workdays`` later — once each.

Both times were fixed by the target's calendar and signed in its delivered event, so the issuer and the target act on
the same moments without sharing a calendar. Each side checks its own copy:

* the TARGET, when its response is due and missing: an R15 alert (yellow card 督办逾期未答复, breached at the due
  time) and ``directives_overdue`` counted on the due day; at the escalation time: a notice to its operators;
* the ISSUER, when no response has reached it by the due time (its own scheduled check, not a message from the
  target: a target that is down or cut off is exactly the one to hear about): a notice to its operators; at the
  escalation time: a signed escalated event to its own parent, carrying the directive, whose operators are told (the
  root, having no parent, tells its own operators).

Each step is marked on the directive's row in the transaction that does it (guarded, so concurrent checks and
restarts do it once). ``supnet serve`` runs ``check_deadlines`` every ``directives.check_interval_seconds``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from federation.proto.v1.common_pb2 import SignedEnvelope
from node.app import Node
from node.audit_log import system_actor
from node.directives.events import audit, sign_event, store_and_queue
from node.directives.messages import KIND_LABELS
from node.directives.store import ANSWERED_STATUSES, deadline_candidates, directive_row, directives_table
from node.notify import NoticeKind, notify_operators_in
from node.store import Case, lock_revision
from node.supervision import R15, AlertDraft, Thresholds, directive_subject, raise_alerts, record_activity

__all__ = ["DeadlineResult", "check_deadlines"]

log = logging.getLogger(__name__)

_d = directives_table.c


@dataclass
class DeadlineResult:
    """What one check did: the directives marked overdue and escalated here (ids)."""

    overdue: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)


def check_deadlines(node: Node, now: datetime | None = None) -> DeadlineResult:
    """Act on every response that fell due or is to escalate, each step once; one transaction per directive."""
    now = now or node.now()
    result = DeadlineResult()
    with node.engine.connect() as conn:
        candidates = [row.id for row in deadline_candidates(conn, now)]
    for directive_id in candidates:
        with node.engine.begin() as conn:
            lock_revision(conn)  # single writer, and R15 and the overdue count go under the metric revision
            row = directive_row(conn, directive_id)
            if row.status in ANSWERED_STATUSES or row.due_at is None or row.due_at >= now:
                continue  # answered meanwhile
            if row.overdue_marked_at is None and _mark(conn, row.id, "overdue_marked_at", now):
                _overdue(conn, node, row, now)
                result.overdue.append(row.id)
            if (
                row.escalation_marked_at is None
                and row.escalate_at is not None
                and row.escalate_at < now
                and _mark(conn, row.id, "escalation_marked_at", now)
            ):
                _escalate(conn, node, row, now)
                result.escalated.append(row.id)
    return result


def _mark(conn: Connection, directive_id: str, column: str, now: datetime) -> bool:
    """Set a once-only mark; False when someone else set it first."""
    mark = _d[column]
    return bool(
        conn.execute(
            update(directives_table).where(_d.id == directive_id, mark.is_(None)).values({column: now})
        ).rowcount
    )


def _label(row: Row[Any]) -> str:
    return KIND_LABELS.get(str(row.kind), str(row.kind))


def _overdue(conn: Connection, node: Node, row: Row[Any], now: datetime) -> None:
    own = node.config.id
    due = row.due_at
    if row.role == "received":
        department = row.subject if row.subject_kind == "department" else ""
        if row.subject_kind == "case":
            case_department = conn.execute(
                select(Case.department).where(Case.case_no == row.subject)
            ).scalar_one_or_none()
            department = case_department or ""
        raised = []
        if Thresholds(node.config.supervision).enabled(R15):
            raised = raise_alerts(
                conn,
                [
                    AlertDraft(
                        rule_id=R15,
                        subject=directive_subject(row.id),
                        department=department,
                        implementation_code="",
                        message=f"{_label(row)} {row.id} from {row.issuer_id}: no response by {due:%Y-%m-%d %H:%M}",
                        raised_at=now,
                        case_no=row.subject if row.subject_kind == "case" else None,
                        breached_at=due,
                    )
                ],
            )
        record_activity(conn, due.date(), "directives_overdue", row.kind)
        audit(
            conn,
            system_actor(own),
            "directive.overdue",
            row.id,
            {"due_at": due.isoformat(), "alert": raised[0].id if raised else None, "side": "target"},
        )
        log.warning("directive %s to %s: response overdue since %s", row.id, own, due)
        return
    notify_operators_in(
        conn,
        node,
        NoticeKind.DIRECTIVE_OVERDUE,
        row.id,
        subject=f"{_label(row)} {row.id}: {row.target_id} 逾期未答复 no response by {due:%Y-%m-%d %H:%M}",
        text=f"No response from {row.target_id} to {_label(row)} {row.id} had reached {own} by its due time "
        f"{due:%Y-%m-%d %H:%M} (the target's calendar). It escalates to "
        f"{own.rpartition('.')[0] or 'this node'} at {row.escalate_at:%Y-%m-%d %H:%M} if still unanswered.\n"
        f"supnet directive show {row.id}",
        now=now,
    )
    audit(conn, system_actor(own), "directive.overdue", row.id, {"due_at": due.isoformat(), "side": "issuer"})


def _escalate(conn: Connection, node: Node, row: Row[Any], now: datetime) -> None:
    own = node.config.id
    text = (
        f"{_label(row)} {row.id} from {row.issuer_id} to {row.target_id} is unanswered since "
        f"{row.due_at:%Y-%m-%d %H:%M}; escalated at {now:%Y-%m-%d %H:%M}"
    )
    if row.role == "received":
        notify_operators_in(
            conn,
            node,
            NoticeKind.DIRECTIVE_ESCALATED,
            row.id,
            subject=f"逾期升级: {_label(row)} {row.id} still unanswered",
            text=f"{text}; the issuer's superior is told as well.\nrespond: supnet directive respond {row.id} --text …",
            now=now,
        )
        audit(conn, system_actor(own), "directive.escalated", row.id, {"side": "target", "to": "operators"})
        return
    parent = node.config.parent_id
    if not parent:
        notify_operators_in(
            conn,
            node,
            NoticeKind.DIRECTIVE_ESCALATED,
            row.id,
            subject=f"逾期升级: {_label(row)} {row.id} to {row.target_id} still unanswered",
            text=f"{text}; {own} is the root, so its own operators are told.\nsupnet directive show {row.id}",
            now=now,
        )
        audit(conn, system_actor(own), "directive.escalated", row.id, {"side": "issuer", "to": "operators"})
        return
    envelope, event = sign_event(
        node,
        row,
        "escalated",
        now,
        by=system_actor(own),
        text=text,
        directive=SignedEnvelope.FromString(bytes(row.envelope)),
    )
    store_and_queue(conn, node, envelope, event, kind="escalated", now=now, next_hop=parent)
    audit(conn, system_actor(own), "directive.escalated", row.id, {"side": "issuer", "to": parent})
