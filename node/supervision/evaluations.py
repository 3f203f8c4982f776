"""Applicant evaluations (好差评): ratings 1–5 (1 very satisfied … 5 very dissatisfied) and their follow-ups.

A rating of 4 or 5 opens a follow-up (the importer stores it 'open', and the import listener in
``complaint_listeners`` guarantees it for any writer) due ``followup_due_for`` (the end of the N-th working day
after the evaluation, N = ``supervision.evaluation_followup_workdays``); someone must contact the applicant and close
it with a note. Follow-ups stored without a deadline (before migration 0009, or a year the calendar lacked) get one
from ``assign_missing_followup_deadlines`` (run by every scan). A follow-up still open at its deadline raises R13
(the scan); closing it corrects that card (纠错). Satisfaction rate = ratings 1–3 / all ratings (derived from
counts with metric_definitions.derived_rates).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, RowMapping, Table, bindparam, func, select, update

from node.audit_log import Action, operator_actor, record_audit
from node.domain import due_at
from node.errors import CalendarError, InvalidStateError, NotFoundError, ValidationError
from node.store import Alert, Case, Evaluation
from node.supervision.metric_definitions import derived_rates
from node.supervision.rulebook import R13, evaluation_subject

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

__all__ = [
    "FOLLOWUP_RATINGS",
    "EvaluationFigures",
    "EvaluationView",
    "assign_missing_followup_deadlines",
    "close_followup",
    "evaluation_figures",
    "followup_due_for",
    "list_evaluations",
]

log = logging.getLogger(__name__)

FOLLOWUP_RATINGS = frozenset({4, 5})

_evaluations = cast(Table, Evaluation.__table__)
_cases = cast(Table, Case.__table__)
_alerts = cast(Table, Alert.__table__)
# An alert not yet corrected or escalated (node.supervision.alerts.OPEN_STATUSES; that module is on this one's layer).
_OPEN_ALERT_STATUSES = ("raised", "notified", "acknowledged")


@dataclass(frozen=True, slots=True)
class EvaluationView:
    """An evaluation with its case's department, as listed to operators."""

    id: int
    case_no: str
    department: str
    channel: str
    evaluated_at: datetime
    satisfaction_code: int
    comment: str
    followup_status: str
    followup_note: str
    followup_closed_at: datetime | None
    followup_due_at: datetime | None


@dataclass(frozen=True, slots=True)
class EvaluationFigures:
    """Counts per rating and per follow-up status; the satisfaction rate is derived from them."""

    ratings: dict[int, int]
    followups_open: int
    followups_closed: int

    @property
    def total(self) -> int:
        """All ratings."""
        return sum(self.ratings.values())

    @property
    def satisfaction_rate(self) -> float | None:
        """Ratings 1–3 / all ratings (the one definition, RATE_DEFINITIONS); None without ratings."""
        return derived_rates({f"ratings_{code}": count for code, count in self.ratings.items()})["satisfaction_rate"]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {
            "total": self.total,
            "ratings": {str(code): count for code, count in self.ratings.items()},
            "satisfaction_rate": self.satisfaction_rate,
            "followups_open": self.followups_open,
            "followups_closed": self.followups_closed,
        }


_SET_FOLLOWUP_DUE = (
    update(_evaluations)
    .where(_evaluations.c.id == bindparam("b_id"), _evaluations.c.followup_due_at.is_(None))
    .values(followup_due_at=bindparam("b_due"))
)


def _select_views() -> Any:
    return select(_evaluations, _cases.c.department).select_from(
        _evaluations.outerjoin(_cases, _cases.c.case_no == _evaluations.c.case_no)
    )


def _view(row: RowMapping) -> EvaluationView:
    return EvaluationView(
        id=row["id"],
        case_no=row["case_no"],
        department=row["department"] or "",
        channel=row["channel"],
        evaluated_at=row["evaluated_at"],
        satisfaction_code=row["satisfaction_code"],
        comment=row["comment"],
        followup_status=row["followup_status"],
        followup_note=row["followup_note"],
        followup_closed_at=row["followup_closed_at"],
        followup_due_at=row["followup_due_at"],
    )


def followup_due_for(calendar: WorkCalendar, evaluated_at: datetime, workdays: int) -> datetime:
    """A follow-up's deadline: end of the ``workdays``-th working day after the evaluation's day.

    CalendarError if a needed year has no data — never a guess.
    """
    return due_at(calendar, evaluated_at, workdays)


def assign_missing_followup_deadlines(conn: Connection, calendar: WorkCalendar, workdays: int) -> tuple[int, list[str]]:
    """Stamp ``followup_due_at`` on open follow-ups that lack one, in the caller's transaction.

    Returns how many were stamped and a warning per year the calendar cannot answer (those stay empty).
    """
    e = _evaluations.c
    rows = conn.execute(
        select(e.id, e.evaluated_at).where(e.followup_status == "open", e.followup_due_at.is_(None))
    ).all()
    stamped: list[dict[str, Any]] = []
    warnings: dict[str, str] = {}
    for evaluation_id, evaluated_at in rows:
        try:
            stamped.append({"b_id": evaluation_id, "b_due": followup_due_for(calendar, evaluated_at, workdays)})
        except CalendarError as exc:
            warnings.setdefault(str(exc), f"evaluation follow-ups without a deadline: {exc}")
    if stamped:
        conn.execute(_SET_FOLLOWUP_DUE, stamped)
    for warning in warnings.values():
        log.warning("%s", warning)
    return len(stamped), list(warnings.values())


def list_evaluations(node: Node, *, open_followups: bool = False, limit: int = 500) -> list[EvaluationView]:
    """Evaluations, newest first; ``open_followups`` keeps only those whose follow-up is still open."""
    query = _select_views().order_by(_evaluations.c.evaluated_at.desc(), _evaluations.c.id.desc()).limit(limit)
    if open_followups:
        query = query.where(_evaluations.c.followup_status == "open")
    with node.engine.connect() as conn:
        return [_view(row) for row in conn.execute(query).mappings().all()]


def evaluation_figures(node: Node) -> EvaluationFigures:
    """Ratings per code and follow-ups per status."""
    e = _evaluations.c
    with node.engine.connect() as conn:
        ratings = {
            int(code): int(n)
            for code, n in conn.execute(select(e.satisfaction_code, func.count()).group_by(e.satisfaction_code))
        }
        followups = {
            s: int(n) for s, n in conn.execute(select(e.followup_status, func.count()).group_by(e.followup_status))
        }
    return EvaluationFigures(
        ratings={code: ratings.get(code, 0) for code in range(1, 6)},
        followups_open=followups.get("open", 0),
        followups_closed=followups.get("closed", 0),
    )


def close_followup(node: Node, evaluation_id: int, note: str, now: datetime | None = None) -> EvaluationView:
    """Close an open follow-up with a note saying what was done (InvalidStateError unless it is open)."""
    text = note.strip()
    if not text:
        raise ValidationError(
            f"evaluation {evaluation_id}: field 'note': required to close a follow-up", field="note", reason="missing"
        )
    when = now or node.now()
    with node.engine.begin() as conn:
        row = conn.execute(select(_evaluations.c.followup_status).where(_evaluations.c.id == evaluation_id)).first()
        if row is None:
            raise NotFoundError(f"evaluation {evaluation_id} not found")
        result = conn.execute(
            update(_evaluations)
            .where(_evaluations.c.id == evaluation_id, _evaluations.c.followup_status == "open")
            .values(followup_status="closed", followup_note=text, followup_closed_at=when)
        )
        if result.rowcount != 1:
            status = row[0]
            detail = "has no follow-up (rated 1–3)" if status == "none" else f"follow-up is already {status}"
            raise InvalidStateError(f"evaluation {evaluation_id}: {detail}; only an open follow-up can be closed")
        # The follow-up closed is the correction (纠错) of its R13 card, if the scan raised one.
        corrected = conn.execute(
            update(_alerts)
            .where(
                _alerts.c.rule_id == R13,
                _alerts.c.subject == evaluation_subject(evaluation_id),
                _alerts.c.status.in_(_OPEN_ALERT_STATUSES),
            )
            .values(status="corrected", corrected_at=when, correction_note=f"回访已完成 follow-up closed: {text}")
            .returning(_alerts.c.id)
        ).all()
        audit_detail: dict[str, Any] = {"note": text}
        if corrected:
            audit_detail["corrected_alert"] = int(corrected[0][0])
        record_audit(
            conn,
            actor=operator_actor(node.config.id),
            action=Action.FOLLOWUP_CLOSED,
            target=f"evaluation:{evaluation_id}",
            detail=audit_detail,
        )
        updated = conn.execute(_select_views().where(_evaluations.c.id == evaluation_id)).mappings().one()
    log.info("evaluation %s follow-up closed", evaluation_id)
    return _view(updated)
