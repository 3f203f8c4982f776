"""Applicant evaluations (好差评): ratings 1–5 (1 very satisfied … 5 very dissatisfied) and their follow-ups.

A rating of 4 or 5 opens a follow-up (the importer stores it 'open', and the import listener in
``complaint_listeners`` guarantees it for any writer); someone must contact the applicant and close it with a
note. Satisfaction rate = ratings 1–3 / all ratings (derived from counts with metric_definitions.derived_rates).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import RowMapping, Table, func, select, update

from node.audit_log import Action, operator_actor, record_audit
from node.errors import InvalidStateError, NotFoundError, ValidationError
from node.store import Case, Evaluation
from node.supervision.metric_definitions import derived_rates

if TYPE_CHECKING:
    from node.app import Node

__all__ = [
    "FOLLOWUP_RATINGS",
    "EvaluationFigures",
    "EvaluationView",
    "close_followup",
    "evaluation_figures",
    "list_evaluations",
]

log = logging.getLogger(__name__)

FOLLOWUP_RATINGS = frozenset({4, 5})

_evaluations = cast(Table, Evaluation.__table__)
_cases = cast(Table, Case.__table__)


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
    )


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
        record_audit(
            conn,
            actor=operator_actor(node.config.id),
            action=Action.FOLLOWUP_CLOSED,
            target=f"evaluation:{evaluation_id}",
            detail={"note": text},
        )
        updated = conn.execute(_select_views().where(_evaluations.c.id == evaluation_id)).mappings().one()
    log.info("evaluation %s follow-up closed", evaluation_id)
    return _view(updated)
