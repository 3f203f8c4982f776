"""Import hooks for complaints and evaluations: decision deadlines on new complaints, follow-ups on poor ratings.

Both are ``IngestListener``s (``on_records(conn, kind, records, now)``, called by the importer inside the batch's
transaction after the batch's NEW records of a kind are written) and write with ONE executemany UPDATE per batch.

* kind ``complaint``: ``decision_due_at`` = end of the N-th working day after the received day
  (N = ``supervision.complaint_decision_workdays``). A complaint whose year the calendar cannot answer keeps NULL and
  is logged at WARNING (never a guessed deadline); ``complaints.assign_missing_decision_deadlines`` stamps it
  once the operator adds the year's holidays.
* kind ``evaluation``: a rating of 4 or 5 (dissatisfied / very dissatisfied, GB/T 39046 A.8) opens a follow-up
  (``followup_status`` 'none' → 'open') due ``evaluations.followup_due_for`` (N =
  ``supervision.evaluation_followup_workdays``), closed with ``node.supervision.evaluations.close_followup``. A
  follow-up whose year the calendar cannot answer (or opened without a node) keeps a NULL deadline, logged;
  ``evaluations.assign_missing_followup_deadlines`` (every scan) stamps it later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, bindparam, update

from node.errors import CalendarError
from node.store import Complaint, Evaluation
from node.supervision.complaints import decision_due_for
from node.supervision.evaluations import FOLLOWUP_RATINGS, followup_due_for

if TYPE_CHECKING:
    from node.app import Node

__all__ = ["ComplaintDeadlineListener", "EvaluationFollowupListener", "complaint_listeners"]

log = logging.getLogger(__name__)

_complaints = cast(Table, Complaint.__table__)
_evaluations = cast(Table, Evaluation.__table__)

# Bind names differ from the column names: SQLAlchemy reserves a column's own name for its SET value.
_SET_DECISION_DUE = (
    update(_complaints)
    .where(_complaints.c.complaint_no == bindparam("b_complaint_no"), _complaints.c.decision_due_at.is_(None))
    .values(decision_due_at=bindparam("b_due"))
)
_OPEN_FOLLOWUP = (
    update(_evaluations)
    .where(
        _evaluations.c.case_no == bindparam("b_case_no"),
        _evaluations.c.evaluated_at == bindparam("b_evaluated_at"),
        # The importer may already store it 'open' (without a deadline): this listener guarantees both.
        _evaluations.c.followup_status != "closed",
        _evaluations.c.followup_due_at.is_(None),
    )
    .values(followup_status="open", followup_due_at=bindparam("b_due"))
)


class ComplaintDeadlineListener:
    """Stamps the accept/decline decision deadline on newly imported complaints."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def on_records(self, conn: Connection, kind: str, records: Sequence[Mapping[str, Any]], now: datetime) -> None:
        if kind != "complaint" or not records:
            return
        params: list[dict[str, Any]] = []
        missing: list[str] = []
        reason = ""
        for record in records:
            try:
                due = decision_due_for(self.node, record["received_at"])
            except CalendarError as exc:
                missing.append(str(record["complaint_no"]))
                reason = str(exc)
                continue
            params.append({"b_complaint_no": record["complaint_no"], "b_due": due})
        if missing:
            log.warning("%s complaints without a decision deadline (first %s): %s", len(missing), missing[:5], reason)
        if params:
            conn.execute(_SET_DECISION_DUE, params)


class EvaluationFollowupListener:
    """Opens a follow-up, with its deadline, for each newly imported evaluation rated 4 or 5."""

    def __init__(self, node: Node | None = None) -> None:
        self.node = node

    def on_records(self, conn: Connection, kind: str, records: Sequence[Mapping[str, Any]], now: datetime) -> None:
        if kind != "evaluation":
            return
        params = [
            {"b_case_no": r["case_no"], "b_evaluated_at": r["evaluated_at"], "b_due": self._due(r["evaluated_at"])}
            for r in records
            if int(r["satisfaction_code"]) in FOLLOWUP_RATINGS
        ]
        missing = sum(1 for p in params if p["b_due"] is None)
        if missing:
            log.warning("%s evaluation follow-ups opened without a deadline (the scan stamps them later)", missing)
        if params:
            conn.execute(_OPEN_FOLLOWUP, params)
            log.info("opened %s evaluation follow-ups", len(params))

    def _due(self, evaluated_at: datetime) -> datetime | None:
        if self.node is None:
            return None
        try:
            return followup_due_for(
                self.node.calendar, evaluated_at, self.node.config.supervision.evaluation_followup_workdays
            )
        except CalendarError:
            return None


def complaint_listeners(node: Node) -> list[ComplaintDeadlineListener | EvaluationFollowupListener]:
    """The listeners of this module, for the importer's default listener list."""
    return [ComplaintDeadlineListener(node), EvaluationFollowupListener(node)]
