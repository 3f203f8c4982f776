"""Efficiency complaints (效能投诉): the handling life, deadlines in working days, and the figures supervisors read.

Life of a complaint (column ``complaints.status``)::

    received ──accept──> accepted ──handle──> handled ──conclude──> concluded (finding + accountability measure)
        └──────decline (reason required)──> declined

* The accept/decline decision is due at the end of the N-th working day after the day it was received
  (N = ``supervision.complaint_decision_workdays``, 5 by default); the import listener stamps ``decision_due_at``.
* Handling is due at the end of the M-th working day after the decision (M = the complaint's own ``promised_limit``
  or else ``supervision.complaint_handling_workdays``, plus its ``extension_workdays``), as the rule engine's R11.
* The rule engine raises the overdue alerts (R10 decision overdue, R11 handling overdue); this module owns the
  transitions and adds to the metric bucket of the respondent unit and the linked case's item: on acceptance
  ``complaints_accepted`` (the decision day), on conclusion ``complaints_concluded`` / ``complaints_substantiated``
  (the concluded day).
* Acceptance rate (受理率) = accepted / received; closure rate (办结率) = concluded / accepted, declined complaints
  left out (docs/domain.md §6; derived with node.supervision.metric_definitions, where they are shown).

Every transition is one transaction with a conditional UPDATE on the expected status, so two operators acting at once
cannot both move the same complaint; an illegal transition raises InvalidStateError, an unknown number NotFoundError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from sqlalchemy import Connection, RowMapping, Table, func, select, update

from node.audit_log import Action, operator_actor, record_audit
from node.domain import due_at
from node.errors import CalendarError, InvalidArgumentError, InvalidStateError, NotFoundError, ValidationError
from node.store import Case, Complaint, lock_revision
from node.supervision.metric_definitions import ACCEPTED_COMPLAINT_STATUSES, derived_rates
from node.supervision.metrics import BucketKey, add_to_buckets

if TYPE_CHECKING:
    from node.app import Node

__all__ = [
    "FINDINGS",
    "STATUSES",
    "ComplaintFigures",
    "ComplaintView",
    "Finding",
    "accept_complaint",
    "assign_missing_decision_deadlines",
    "complaint_figures",
    "conclude_complaint",
    "decision_due_for",
    "decline_complaint",
    "get_complaint",
    "handle_complaint",
    "handling_due_for",
    "list_complaints",
]

log = logging.getLogger(__name__)

Finding = Literal["substantiated", "unsubstantiated"]
FINDINGS: tuple[str, ...] = get_args(Finding)
STATUSES: tuple[str, ...] = ("received", "accepted", "declined", "handled", "concluded")

_complaints = cast(Table, Complaint.__table__)
_cases = cast(Table, Case.__table__)


@dataclass(frozen=True, slots=True)
class ComplaintView:
    """A complaint as shown to operators (the complainant's name is personal data and is left out)."""

    complaint_no: str
    title: str
    respondent_unit: str
    respondent_person: str
    case_no: str | None
    received_at: datetime
    status: str
    decision_due_at: datetime | None
    decided_at: datetime | None
    decision_reason: str
    handler: str
    feedback: str
    handling_due_at: datetime | None
    handled_at: datetime | None
    concluded_at: datetime | None
    finding: str
    accountability_measure: str
    overdue: str | None
    """'decision' or 'handling' when that deadline has passed (as of the listing time), else None."""


@dataclass(frozen=True, slots=True)
class ComplaintFigures:
    """Counts per status and the derived rates: acceptance (accepted / received), closure (concluded / accepted)."""

    received: int
    by_status: dict[str, int]
    accepted: int
    """Ever accepted (受理): now accepted, handled or concluded."""
    concluded: int
    substantiated: int
    with_accountability: int
    decision_overdue: int
    handling_overdue: int
    no_deadline: int

    def _rates(self) -> dict[str, float | None]:
        return derived_rates(
            {
                "complaints_received": self.received,
                "complaints_accepted": self.accepted,
                "complaints_concluded": self.concluded,
            }
        )

    @property
    def acceptance_rate(self) -> float | None:
        """受理率 = accepted / received; None when nothing was received."""
        return self._rates()["complaint_acceptance_rate"]

    @property
    def closure_rate(self) -> float | None:
        """办结率 = concluded / accepted (declined ones left out); None when nothing was accepted."""
        return self._rates()["complaint_closure_rate"]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output, the rate included."""
        return {
            "received": self.received,
            "by_status": self.by_status,
            "accepted": self.accepted,
            "concluded": self.concluded,
            "substantiated": self.substantiated,
            "with_accountability": self.with_accountability,
            "decision_overdue": self.decision_overdue,
            "handling_overdue": self.handling_overdue,
            "no_deadline": self.no_deadline,
            "acceptance_rate": self.acceptance_rate,
            "closure_rate": self.closure_rate,
        }


# -- deadlines ---------------------------------------------------------------------------------------------------------
def decision_due_for(node: Node, received_at: datetime) -> datetime:
    """End of the N-th working day after the day received (CalendarError if a needed year has no data)."""
    return due_at(node.calendar, received_at, node.config.supervision.complaint_decision_workdays)


def handling_due_for(
    node: Node, decided_at: datetime, promised_limit: int | None = None, extension_workdays: int = 0
) -> datetime:
    """End of the M-th working day after the accept decision.

    M = the complaint's own promised limit (承诺时限) if it has one, else ``complaint_handling_workdays``, plus any
    approved extension (延期) — the same rule as the rule engine's R11.
    """
    limit = promised_limit or node.config.supervision.complaint_handling_workdays
    return due_at(node.calendar, decided_at, limit + max(extension_workdays, 0))


def assign_missing_decision_deadlines(node: Node) -> int:
    """Stamp ``decision_due_at`` on received complaints that lack one (e.g. imported before the calendar had the year).

    Returns how many were stamped; complaints whose year the calendar still cannot answer are logged and left empty.
    """
    with node.engine.begin() as conn:
        rows = conn.execute(
            select(_complaints.c.complaint_no, _complaints.c.received_at).where(
                _complaints.c.decision_due_at.is_(None), _complaints.c.status == "received"
            )
        ).all()
        stamped = 0
        for complaint_no, received_at in rows:
            try:
                due = decision_due_for(node, received_at)
            except CalendarError as exc:
                log.warning("complaint %s: no decision deadline: %s", complaint_no, exc)
                continue
            conn.execute(
                update(_complaints)
                .where(_complaints.c.complaint_no == complaint_no, _complaints.c.decision_due_at.is_(None))
                .values(decision_due_at=due)
            )
            stamped += 1
    return stamped


# -- reading -----------------------------------------------------------------------------------------------------------
def _view(node: Node, row: RowMapping, now: datetime) -> ComplaintView:
    handling_due: datetime | None = None
    if row["decided_at"] is not None and row["status"] in {"accepted", "handled", "concluded"}:
        try:
            handling_due = handling_due_for(
                node, row["decided_at"], row["promised_limit"], row["extension_workdays"] or 0
            )
        except CalendarError as exc:
            log.warning("complaint %s: no handling deadline: %s", row["complaint_no"], exc)
    overdue: str | None = None
    if row["status"] == "received" and row["decision_due_at"] is not None and now > row["decision_due_at"]:
        overdue = "decision"
    elif row["status"] == "accepted" and handling_due is not None and now > handling_due:
        overdue = "handling"
    return ComplaintView(
        complaint_no=row["complaint_no"],
        title=row["title"],
        respondent_unit=row["respondent_unit"],
        respondent_person=row["respondent_person"],
        case_no=row["case_no"],
        received_at=row["received_at"],
        status=row["status"],
        decision_due_at=row["decision_due_at"],
        decided_at=row["decided_at"],
        decision_reason=row["decision_reason"],
        handler=row["handler"],
        feedback=row["feedback"],
        handling_due_at=handling_due,
        handled_at=row["handled_at"],
        concluded_at=row["concluded_at"],
        finding=row["finding"],
        accountability_measure=row["accountability_measure"],
        overdue=overdue,
    )


def get_complaint(node: Node, complaint_no: str, now: datetime | None = None) -> ComplaintView:
    """One complaint by number; NotFoundError if there is none."""
    with node.engine.connect() as conn:
        row = conn.execute(select(_complaints).where(_complaints.c.complaint_no == complaint_no)).mappings().first()
    if row is None:
        raise NotFoundError(f"complaint {complaint_no!r} not found")
    return _view(node, row, now or node.now())


def list_complaints(
    node: Node,
    *,
    status: str | None = None,
    overdue_only: bool = False,
    now: datetime | None = None,
    limit: int = 500,
) -> list[ComplaintView]:
    """Complaints, oldest received first; ``overdue_only`` keeps those past their decision or handling deadline."""
    if status is not None and status not in STATUSES:
        raise InvalidArgumentError(f"complaint status must be one of {', '.join(STATUSES)}, got {status!r}")
    now = now or node.now()
    query = select(_complaints).order_by(_complaints.c.received_at, _complaints.c.complaint_no)
    if status is not None:
        query = query.where(_complaints.c.status == status)
    # Overdue is decided per row in Python (handling deadlines need the calendar), so the limit applies afterwards.
    query = query.where(_complaints.c.status.in_(("received", "accepted"))) if overdue_only else query.limit(limit)
    with node.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    views = [_view(node, row, now) for row in rows]
    if overdue_only:
        views = [v for v in views if v.overdue is not None][:limit]
    return views


def complaint_figures(node: Node, now: datetime | None = None) -> ComplaintFigures:
    """Counts per status, substantiated, overdue (decision, handling), and the data for the closure rate."""
    now = now or node.now()
    c = _complaints.c
    with node.engine.connect() as conn:
        by_status = {s: int(n) for s, n in conn.execute(select(c.status, func.count()).group_by(c.status)).all()}
        substantiated = conn.execute(select(func.count()).where(c.finding == "substantiated")).scalar_one()
        with_measure = conn.execute(
            select(func.count()).where(c.status == "concluded", c.accountability_measure != "")
        ).scalar_one()
        decision_overdue = conn.execute(
            select(func.count()).where(c.status == "received", c.decision_due_at < now)
        ).scalar_one()
        no_deadline = conn.execute(
            select(func.count()).where(c.status == "received", c.decision_due_at.is_(None))
        ).scalar_one()
        accepted = conn.execute(
            select(c.complaint_no, c.decided_at, c.promised_limit, c.extension_workdays).where(c.status == "accepted")
        ).all()
    handling_overdue = 0
    for complaint_no, decided_at, promised_limit, extension in accepted:
        try:
            if decided_at is not None and now > handling_due_for(node, decided_at, promised_limit, extension or 0):
                handling_overdue += 1
        except CalendarError as exc:
            log.warning("complaint %s: no handling deadline: %s", complaint_no, exc)
    return ComplaintFigures(
        received=sum(by_status.values()),
        by_status={s: by_status.get(s, 0) for s in STATUSES},
        accepted=sum(by_status.get(s, 0) for s in ACCEPTED_COMPLAINT_STATUSES),
        concluded=by_status.get("concluded", 0),
        substantiated=int(substantiated),
        with_accountability=int(with_measure),
        decision_overdue=int(decision_overdue),
        handling_overdue=handling_overdue,
        no_deadline=int(no_deadline),
    )


# -- transitions -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Move:
    """One transition of the life above: the status it leaves and enters, when it happened, how it is audited."""

    from_status: str
    to_status: str
    time_column: str
    audit_action: str


_MOVES: dict[str, _Move] = {
    "accept": _Move("received", "accepted", "decided_at", Action.COMPLAINT_ACCEPTED),
    "decline": _Move("received", "declined", "decided_at", Action.COMPLAINT_DECLINED),
    "handle": _Move("accepted", "handled", "handled_at", Action.COMPLAINT_HANDLED),
    "conclude": _Move("handled", "concluded", "concluded_at", Action.COMPLAINT_CONCLUDED),
}
# The column holding when a complaint entered each status: a transition may not be dated before it.
_ENTERED_AT: dict[str, str] = {"received": "received_at", **{m.to_status: m.time_column for m in _MOVES.values()}}


def _transition(
    node: Node,
    complaint_no: str,
    action: str,
    *,
    now: datetime | None,
    values: Mapping[str, Any],
    by: str = "",
    after_update: Callable[[Connection, RowMapping, datetime], None] | None = None,
) -> ComplaintView:
    """Make the move ``action`` on one complaint in one transaction, or raise why not; ``by`` becomes the handler."""
    move = _MOVES[action]
    from_status, to_status, time_column = move.from_status, move.to_status, move.time_column
    if by.strip():
        values = {**values, "handler": by.strip()}
    when = now or node.now()
    with node.engine.begin() as conn:
        # The metric revision row first, as every metric writer takes it: an import relinking this complaint to a
        # newly arrived case cannot interleave with the counters this transition moves.
        lock_revision(conn)
        row = (
            conn.execute(select(_complaints).where(_complaints.c.complaint_no == complaint_no).with_for_update())
            .mappings()
            .first()
        )
        if row is None:
            raise NotFoundError(f"complaint {complaint_no!r} not found")
        if row["status"] != from_status:
            raise InvalidStateError(
                f"complaint {complaint_no} is {row['status']}: cannot {action} it (only a {from_status} complaint)"
            )
        previous_time_column = _ENTERED_AT[from_status]
        previous_time = row[previous_time_column]
        if previous_time is not None and when < previous_time:
            raise ValidationError(
                f"complaint {complaint_no}: field '{time_column}': {when.isoformat(sep=' ')} is before "
                f"{previous_time_column} {previous_time.isoformat(sep=' ')}",
                field=time_column,
                reason="before_previous_step",
            )
        result = conn.execute(
            update(_complaints)
            .where(_complaints.c.complaint_no == complaint_no, _complaints.c.status == from_status)
            .values(status=to_status, **{time_column: when}, **values)
        )
        if result.rowcount != 1:
            raise InvalidStateError(f"complaint {complaint_no} changed concurrently; {action} not applied")
        if after_update is not None:
            after_update(conn, row, when)
        record_audit(
            conn,
            actor=operator_actor(node.config.id),
            action=move.audit_action,
            target=f"complaint:{complaint_no}",
            detail={"from": from_status, "to": to_status, **{key: str(value) for key, value in values.items()}},
        )
        updated = conn.execute(select(_complaints).where(_complaints.c.complaint_no == complaint_no)).mappings().one()
    log.info("complaint %s %s -> %s", complaint_no, from_status, to_status)
    return _view(node, updated, when)


def _required_text(complaint_no: str, field: str, value: str) -> str:
    text = value.strip()
    if not text:
        raise ValidationError(f"complaint {complaint_no}: field '{field}': required", field=field, reason="missing")
    return text


def _linked_item(conn: Connection, case_no: str | None) -> tuple[str, str, str]:
    """(implementation_code, basic_code, item_type_code) of the complaint's case, or blanks without one."""
    if not case_no:
        return "", "", ""
    row = conn.execute(
        select(_cases.c.implementation_code, _cases.c.basic_code, _cases.c.item_type_code).where(
            _cases.c.case_no == case_no
        )
    ).first()
    if row is None:
        return "", "", ""
    return row[0], row[1], row[2]


def _count_in_bucket(conn: Connection, row: RowMapping, when: datetime, counters: Mapping[str, int]) -> None:
    """Add ``counters`` to the bucket of ``when``'s day, the respondent unit and the linked case's item."""
    implementation_code, basic_code, item_type_code = _linked_item(conn, row["case_no"])
    key = BucketKey(
        day=when.date(),
        department=row["respondent_unit"],
        implementation_code=implementation_code,
        basic_code=basic_code,
        item_type_code=item_type_code,
    )
    add_to_buckets(conn, {key: dict(counters)})


def accept_complaint(
    node: Node, complaint_no: str, by: str = "", now: datetime | None = None, note: str = ""
) -> ComplaintView:
    """Accept (受理): received → accepted; ``by`` becomes the handler, ``note`` the decision remark; counted."""

    def count_acceptance(conn: Connection, row: RowMapping, when: datetime) -> None:
        _count_in_bucket(conn, row, when, {"complaints_accepted": 1})

    return _transition(
        node,
        complaint_no,
        "accept",
        now=now,
        by=by,
        values={"decision_reason": note.strip()},
        after_update=count_acceptance,
    )


def decline_complaint(
    node: Node, complaint_no: str, reason: str, by: str = "", now: datetime | None = None
) -> ComplaintView:
    """Decline (不予受理): received → declined; a reason is required."""
    reason = _required_text(complaint_no, "reason", reason)
    return _transition(node, complaint_no, "decline", now=now, by=by, values={"decision_reason": reason})


def handle_complaint(
    node: Node, complaint_no: str, feedback: str, by: str = "", now: datetime | None = None
) -> ComplaintView:
    """Handle (办理): accepted → handled; the feedback to the complainant is required."""
    feedback = _required_text(complaint_no, "feedback", feedback)
    return _transition(node, complaint_no, "handle", now=now, by=by, values={"feedback": feedback})


def conclude_complaint(
    node: Node, complaint_no: str, finding: str, measure: str = "", now: datetime | None = None
) -> ComplaintView:
    """Conclude (办结): handled → concluded with a finding and any accountability measure; counted in metrics."""
    if finding not in FINDINGS:
        raise ValidationError(
            f"complaint {complaint_no}: field 'finding': must be substantiated or unsubstantiated, got {finding!r}",
            field="finding",
            reason="bad_code",
        )
    substantiated = finding == "substantiated"

    def count_conclusion(conn: Connection, row: RowMapping, when: datetime) -> None:
        _count_in_bucket(conn, row, when, {"complaints_concluded": 1, "complaints_substantiated": int(substantiated)})

    values = {"finding": finding, "accountability_measure": measure.strip()}
    return _transition(node, complaint_no, "conclude", now=now, values=values, after_update=count_conclusion)
