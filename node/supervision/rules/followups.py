"""R13 in the periodic scan: follow-ups of ratings 4–5 still open past their deadline (``followup_due_at``).

The scan first stamps a deadline on open follow-ups that lack one (stored before migration 0009, or a year the
calendar lacked: ``evaluations.assign_missing_followup_deadlines``), then raises one R13 yellow card per follow-up
whose deadline has passed, breached at that deadline (docs/domain.md §5). Closing the follow-up
(``close_followup``) corrects the card.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, DateTime, String, Table, bindparam, cast, exists, func, literal, select

from node.store import Alert, Case, Evaluation
from node.supervision.alerts import AlertDraft, RaisedAlert, raise_alerts
from node.supervision.evaluations import assign_missing_followup_deadlines
from node.supervision.rulebook import R13, evaluation_subject
from node.supervision.rules.context import RuleContext, fmt

__all__ = ["scan_followups"]

_alerts: Table = Alert.__table__  # type: ignore[assignment]
_cases: Table = Case.__table__  # type: ignore[assignment]
_evaluations: Table = Evaluation.__table__  # type: ignore[assignment]


def _candidates() -> Any:
    """Open follow-ups due before ``:now`` without an R13 card yet, with their case's department and item."""
    e, c = _evaluations.c, _cases.c
    subject = literal("evaluation:") + cast(e.id, String)
    already = exists().where(_alerts.c.rule_id == R13, _alerts.c.subject == subject)
    return (
        select(
            e.id,
            e.case_no,
            e.satisfaction_code,
            e.followup_due_at,
            func.coalesce(c.department, "").label("department"),
            func.coalesce(c.implementation_code, "").label("implementation_code"),
            func.coalesce(c.basic_code, "").label("basic_code"),
            func.coalesce(c.item_type_code, "").label("item_type_code"),
        )
        .select_from(_evaluations.outerjoin(_cases, c.case_no == e.case_no))
        .where(
            e.followup_status == "open",
            e.followup_due_at.is_not(None),
            e.followup_due_at < bindparam("now", type_=DateTime()),
            e.followup_due_at >= bindparam("since", type_=DateTime()),
            ~already,
        )
    )


_CANDIDATES = _candidates()


def scan_followups(ctx: RuleContext, conn: Connection, now: datetime, *, since: datetime | None) -> list[RaisedAlert]:
    """R13 on open follow-ups that fell due in [since, now).

    ``since`` None is the daily pass: stamp missing deadlines first, then judge every open follow-up past due.
    """
    if since is None:
        _, warnings = assign_missing_followup_deadlines(conn, ctx.calendar, ctx.thresholds.evaluation_followup_workdays)
        ctx.warnings.extend(warnings)
    drafts: list[AlertDraft] = []
    for row in conn.execute(_CANDIDATES, {"now": now, "since": since or datetime.min}).all():
        if not ctx.thresholds.enabled(R13, row.item_type_code):
            continue
        drafts.append(
            AlertDraft(
                rule_id=R13,
                subject=evaluation_subject(int(row.id)),
                department=row.department,
                implementation_code=row.implementation_code,
                message=(
                    f"办件 {row.case_no} 差评({row.satisfaction_code})回访超时: evaluation follow-up still open past "
                    f"its deadline {fmt(row.followup_due_at)}"
                ),
                raised_at=now,
                breached_at=row.followup_due_at,
                case_no=row.case_no,
                correct_by=ctx._correct_by(R13, row.item_type_code, now),
                basic_code=row.basic_code,
                item_type_code=row.item_type_code,
            )
        )
    return raise_alerts(conn, drafts)
