"""Drill-down answers about records: cases, one case's detail and timeline, alerts and complaints.

Every function reads this node's own database and returns the proto message of one answer kind plus
the token of the next page ('' on the last page). Personal data (applicant names, ID numbers,
complainants) leaves only masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, DateTime, Integer, and_, bindparam, exists, func, or_, select, tuple_
from sqlalchemy import case as sql_case
from sqlalchemy.sql.elements import ColumnElement

from federation import DriverStatement, InvalidArgumentError, NotFoundError
from federation.proto.v1 import drilldown_pb2 as dd
from node.app import Node
from node.drilldown.masking import mask_id_number, mask_name
from node.drilldown.query_terms import datetime_bounds, decode_page_token, encode_page_token, page_size_of, to_ms
from node.store import Alert, Case, Complaint, Completion, Evaluation, Item, Payment, SpecialProcedure, Step

# --- cases --------------------------------------------------------------------------------------


_CASE_COLUMNS = (
    Case.case_no,
    Case.implementation_code,
    Case.basic_code,
    Case.item_type_code,
    Case.department,
    Case.applicant_name,
    Case.status,
    Case.accepted_at,
    Case.promised_due_at,
    Case.legal_due_at,
    Case.completed_at,
    Case.clock_stopped,
    Case.clock_stop_workdays,
    Case.supplement_count,
    Case.return_count,
)


def _alert_count(severity: str) -> Any:
    # Correlated per returned row only (the page is LIMITed first): cheaper than a second query per page.
    # Only case_no is in the WHERE clause so the planner looks alerts up by case (a severity condition
    # there lets SQLite pick the severity index and scan every alert of that severity per row).
    return (
        select(func.coalesce(func.sum(sql_case((Alert.severity == severity, 1), else_=0)), 0))
        .where(Alert.case_no == Case.case_no)
        .correlate(Case)
        .scalar_subquery()
        .label(f"alerts_{severity}")
    )


@cache
def _cases_base() -> Any:
    """The case listing's SELECT without filters, built once (building it costs more than running it)."""
    alert_counts = [_alert_count(severity) for severity in ("reminder", "yellow", "red")]
    return select(*_CASE_COLUMNS, Item.name.label("item_name"), *alert_counts).join(
        Item, Item.implementation_code == Case.implementation_code
    )


# Positions in a row of _CASE_COLUMNS (the listing reads plain driver tuples, see answer_cases).
(
    _NO,
    _IMPLEMENTATION,
    _BASIC,
    _ITEM_TYPE,
    _DEPARTMENT,
    _APPLICANT,
    _STATUS,
    _ACCEPTED,
    _PROMISED_DUE,
    _LEGAL_DUE,
    _COMPLETED,
    _CLOCK_STOPPED,
    _STOP_WORKDAYS,
    _SUPPLEMENTS,
    _RETURNS,
) = range(len(_CASE_COLUMNS))


def _as_datetime(value: Any) -> Any:
    # SQLite hands DateTime columns to the driver as text (SQLAlchemy's own format), PostgreSQL as datetimes.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _add_case_row(
    rows: Any, values: Sequence[Any], item_name: str, alerts: Sequence[int], *, now: datetime, tz: ZoneInfo
) -> None:
    """Append one CaseRow built from the values of _CASE_COLUMNS (date-times as datetimes) to ``rows``."""
    status, completed_at = values[_STATUS], values[_COMPLETED]
    promised_due, legal_due = values[_PROMISED_DUE], values[_LEGAL_DUE]
    is_open = status == "open"
    reference = now if is_open else (completed_at or now)
    running = not (is_open and values[_CLOCK_STOPPED])
    row = rows.add(
        case_no=values[_NO],
        implementation_code=values[_IMPLEMENTATION],
        basic_code=values[_BASIC],
        item_name=item_name,
        item_type_code=values[_ITEM_TYPE],
        department=values[_DEPARTMENT],
        applicant_masked=mask_name(values[_APPLICANT] or ""),
        status=status,
        accepted_at_ms=to_ms(values[_ACCEPTED], tz),
        promised_due_at_ms=to_ms(promised_due, tz),
        legal_due_at_ms=to_ms(legal_due, tz),
        overdue_promised=running and reference > promised_due,
        overdue_legal=running and reference > legal_due,
        clock_stopped=bool(values[_CLOCK_STOPPED]),
        clock_stop_workdays=int(values[_STOP_WORKDAYS] or 0),
        supplement_count=int(values[_SUPPLEMENTS] or 0),
        return_count=int(values[_RETURNS] or 0),
        reminders=alerts[0],
        yellow_cards=alerts[1],
        red_cards=alerts[2],
    )
    if completed_at is not None:
        row.completed_at_ms = to_ms(completed_at, tz)


def _case_row(node: Node, case: Case, item_name: str, alerts: Mapping[str, int], now: datetime) -> dd.CaseRow:
    holder = dd.CasesAnswer()
    values = tuple(getattr(case, column.key) for column in _CASE_COLUMNS)
    counts = (alerts.get("reminder", 0), alerts.get("yellow", 0), alerts.get("red", 0))
    _add_case_row(holder.cases, values, item_name, counts, now=now, tz=node.tz)
    return holder.cases[0]


def _overdue_condition(now: Any) -> ColumnElement[bool]:
    open_overdue = and_(Case.status == "open", Case.clock_stopped.is_(False), Case.promised_due_at < now)
    completed_late = and_(Case.status == "completed", Case.completed_at > Case.promised_due_at)
    return or_(open_overdue, completed_late)


@cache
def _cases_statement(shape: frozenset[str]) -> Any:
    """The listing SELECT for one combination of filters, values as bind parameters.

    One statement object per shape is reused, so SQLAlchemy neither rebuilds nor re-adapts it per call.
    """
    conditions: list[ColumnElement[bool]] = []
    if "open" in shape:
        conditions.append(Case.status == "open")
    if "completed" in shape:
        conditions.append(Case.status == "completed")
    if "overdue" in shape:
        conditions.append(_overdue_condition(bindparam("now", type_=DateTime)))
    if "red_card" in shape:
        conditions.append(exists().where(Alert.case_no == Case.case_no, Alert.severity == "red"))
    if "basic_code" in shape:
        conditions.append(Case.basic_code == bindparam("basic_code"))
    if "department" in shape:
        conditions.append(Case.department == bindparam("department"))
    if "lower" in shape:
        conditions.append(Case.accepted_at >= bindparam("lower", type_=DateTime))
    if "upper" in shape:
        conditions.append(Case.accepted_at < bindparam("upper", type_=DateTime))
    if "after" in shape:
        after_key = tuple_(bindparam("after_at", type_=DateTime), bindparam("after_no"))
        conditions.append(tuple_(Case.accepted_at, Case.case_no) > after_key)
    limit = bindparam("limit", type_=Integer)
    return _cases_base().where(*conditions).order_by(Case.accepted_at, Case.case_no).limit(limit)


@cache
def _cases_reader(shape: frozenset[str]) -> DriverStatement:
    # Compiled once per shape and run on the driver's cursor: SQLAlchemy's per-execution and per-row work cost
    # more than the query itself on the drill-down path (rows come back as plain tuples).
    return DriverStatement(_cases_statement(shape))


def answer_cases(node: Node, request: dd.CasesRequest, page_size: int, page_token: str) -> tuple[dd.CasesAnswer, str]:
    """The node's own cases matching the filters, oldest acceptance first, one page at a time."""
    size = page_size_of(page_size)
    after = decode_page_token("cases", page_token)
    now = node.now()
    lower, upper = datetime_bounds(request.day_from, request.day_to)
    shape: set[str] = set()
    params: dict[str, Any] = {"limit": size + 1}
    if request.status == dd.CASE_STATUS_FILTER_OPEN:
        shape.add("open")
    elif request.status == dd.CASE_STATUS_FILTER_COMPLETED:
        shape.add("completed")
    if request.overdue_only:
        shape.add("overdue")
        params["now"] = now
    if request.red_card_only:
        shape.add("red_card")
    for name, value in (("basic_code", request.basic_code), ("department", request.department)):
        if value:
            shape.add(name)
            params[name] = value
    for name, bound in (("lower", lower), ("upper", upper)):
        if bound:
            shape.add(name)
            params[name] = bound
    if after:
        try:
            params["after_at"], params["after_no"] = datetime.fromisoformat(str(after[0])), str(after[1])
        except (ValueError, IndexError) as exc:
            raise InvalidArgumentError("page_token is not a token this node issued") from exc
        shape.add("after")
    with node.engine.connect() as conn:
        fetched = _cases_reader(frozenset(shape)).fetch_all(conn, params)
    page, more = fetched[:size], len(fetched) > size
    answer = dd.CasesAnswer()
    tz, rows, last_at = node.tz, answer.cases, None
    datetimes = (_ACCEPTED, _PROMISED_DUE, _LEGAL_DUE, _COMPLETED)
    for fetched_row in page:
        values = list(fetched_row)
        for position in datetimes:
            values[position] = _as_datetime(values[position])
        item_name, *alerts = values[len(_CASE_COLUMNS) :]
        _add_case_row(rows, values, str(item_name), [int(count or 0) for count in alerts], now=now, tz=tz)
        last_at = values[_ACCEPTED]
    token = ""
    if more and page and last_at is not None:
        token = encode_page_token("cases", [last_at.isoformat(), page[-1][_NO]])
    return answer, token


# --- case detail --------------------------------------------------------------------------------


def _alert_row(node: Node, alert: Alert) -> dd.AlertRow:
    tz = node.tz
    row = dd.AlertRow(
        id=alert.id,
        rule_id=alert.rule_id,
        severity=alert.severity,
        status=alert.status,
        subject=alert.subject,
        case_no=alert.case_no or "",
        department=alert.department,
        post=alert.post,
        message=alert.message,
        raised_at_ms=to_ms(alert.raised_at, tz),
        breached_at_ms=to_ms(alert.breached_at, tz),
    )
    if alert.correct_by is not None:
        row.correct_by_ms = to_ms(alert.correct_by, tz)
    if alert.corrected_at is not None:
        row.corrected_at_ms = to_ms(alert.corrected_at, tz)
    if alert.escalated_at is not None:
        row.escalated_at_ms = to_ms(alert.escalated_at, tz)
    return row


_RESULT_NAMES = {"1": "approved 准予", "2": "refused 不予", "3": "not accepted 不予受理", "9": "other 其他"}


def _timeline(node: Node, conn: Connection, case: Case, alerts: Sequence[Alert]) -> list[dd.TimelineEvent]:
    from sqlalchemy.orm import Session

    tz = node.tz
    events: list[tuple[datetime, int, dd.TimelineEvent]] = []

    def add(at: datetime, kind: str, title: str, actor: str = "", detail: str = "") -> None:
        event = dd.TimelineEvent(at_ms=to_ms(at, tz), kind=kind, title=title, actor=actor, detail=detail)
        events.append((at, len(events), event))

    add(case.accepted_at, "acceptance", f"accepted 受理 by {case.department}", case.acceptor, f"item {case.basic_code}")
    with Session(bind=conn) as session:
        for step in session.scalars(select(Step).where(Step.case_no == case.case_no)):
            actor = " / ".join(part for part in (step.handler, step.post) if part)
            status = "done" if step.status_code == "2" else "pending"
            add(
                step.ended_at or step.started_at,
                "step",
                f"{step.step_name}: {step.action} ({status})",
                actor,
                step.opinion,
            )
        for procedure in session.scalars(select(SpecialProcedure).where(SpecialProcedure.case_no == case.case_no)):
            kind_name = "extension 延期" if procedure.kind_code == "1" else "special procedure 特别程序"
            add(procedure.started_at, "procedure_start", f"{kind_name} started, clock stopped", detail=procedure.reason)
            if procedure.ended_at is not None:
                add(
                    procedure.ended_at,
                    "procedure_end",
                    f"{kind_name} ended after {procedure.workdays} working days",
                    detail=procedure.result,
                )
        for payment in session.scalars(select(Payment).where(Payment.case_no == case.case_no)):
            add(payment.paid_at, "payment", f"fee paid 收费 {payment.amount} yuan")
        completion = session.get(Completion, case.case_no)
        if completion is not None:
            result = _RESULT_NAMES.get(completion.result_code, completion.result_code)
            certificate = " ".join(p for p in (completion.certificate_name, completion.certificate_no) if p)
            add(
                completion.completed_at, "completion", f"completed 办结: {result}", completion.handler_name, certificate
            )
        for evaluation in session.scalars(select(Evaluation).where(Evaluation.case_no == case.case_no)):
            # The applicant's free-text comment may identify them, so only the rating and channel leave the node.
            add(
                evaluation.evaluated_at,
                "evaluation",
                f"rated {evaluation.satisfaction_code} (1 very satisfied … 5 very dissatisfied)",
                detail=f"channel {evaluation.channel}; follow-up {evaluation.followup_status}",
            )
        for complaint in session.scalars(select(Complaint).where(Complaint.case_no == case.case_no)):
            add(
                complaint.received_at,
                "complaint",
                f"complaint 投诉 {complaint.complaint_no}: {complaint.title}",
                detail=f"status {complaint.status}",
            )
    for alert in alerts:
        add(
            alert.raised_at, "alert", f"{alert.severity} {alert.rule_id}", alert.post or alert.department, alert.message
        )
    events.sort(key=lambda entry: (entry[0], entry[1]))
    return [event for _, _, event in events]


def answer_case_detail(node: Node, request: dd.CaseDetailRequest) -> tuple[dd.CaseDetailAnswer, str]:
    """One case with its timeline and alerts; applicant data masked."""
    from sqlalchemy.orm import Session

    if not request.case_no:
        raise InvalidArgumentError("case_detail needs a case_no")
    with node.engine.connect() as conn, Session(bind=conn) as session:
        case = session.get(Case, request.case_no)
        if case is None:
            raise NotFoundError(f"case {request.case_no} is not a case of node {node.config.id}")
        item_name = session.scalar(select(Item.name).where(Item.implementation_code == case.implementation_code))
        alerts = list(session.scalars(select(Alert).where(Alert.case_no == case.case_no).order_by(Alert.raised_at)))
        counts: dict[str, int] = {}
        for alert in alerts:
            counts[alert.severity] = counts.get(alert.severity, 0) + 1
        answer = dd.CaseDetailAnswer(
            case=_case_row(node, case, item_name or "", counts, node.now()),
            applicant_id_type=case.applicant_id_type,
            applicant_id_masked=mask_id_number(case.applicant_id_no or ""),
            area_code=case.area_code,
        )
        answer.timeline.extend(_timeline(node, conn, case, alerts))
        answer.alerts.extend(_alert_row(node, alert) for alert in alerts)
    return answer, ""


# --- alerts -------------------------------------------------------------------------------------


def answer_alerts(
    node: Node, request: dd.AlertsRequest, page_size: int, page_token: str
) -> tuple[dd.AlertsAnswer, str]:
    """The node's own alerts, newest breach first, filtered by breach day (as card counters are) and paged."""
    from sqlalchemy.orm import Session

    size = page_size_of(page_size)
    after = decode_page_token("alerts", page_token)
    lower, upper = datetime_bounds(request.day_from, request.day_to)
    conditions: list[ColumnElement[bool]] = []
    if request.severity:
        conditions.append(Alert.severity == request.severity)
    if request.status:
        conditions.append(Alert.status == request.status)
    if request.open_only:
        conditions.append(Alert.status.not_in(("corrected", "escalated")))
    for column, value in (
        (Alert.case_no, request.case_no),
        (Alert.department, request.department),
        (Alert.rule_id, request.rule_id),
    ):
        if value:
            conditions.append(column == value)
    if lower:
        conditions.append(Alert.breached_at >= lower)
    if upper:
        conditions.append(Alert.breached_at < upper)
    if after:
        try:
            breached_at, alert_id = datetime.fromisoformat(str(after[0])), int(after[1])
        except (ValueError, IndexError, TypeError) as exc:
            raise InvalidArgumentError("page_token is not a token this node issued") from exc
        conditions.append(tuple_(Alert.breached_at, Alert.id) < tuple_(breached_at, alert_id))
    statement = select(Alert).where(*conditions).order_by(Alert.breached_at.desc(), Alert.id.desc()).limit(size + 1)
    with node.engine.connect() as conn, Session(bind=conn) as session:
        fetched = list(session.scalars(statement))
    page, more = fetched[:size], len(fetched) > size
    answer = dd.AlertsAnswer(alerts=[_alert_row(node, alert) for alert in page])
    token = encode_page_token("alerts", [page[-1].breached_at.isoformat(), page[-1].id]) if more and page else ""
    return answer, token


# --- complaints ---------------------------------------------------------------------------------


def answer_complaints(
    node: Node, request: dd.ComplaintsRequest, page_size: int, page_token: str
) -> tuple[dd.ComplaintsAnswer, str]:
    """The node's own complaints, newest first; complainants masked."""
    from sqlalchemy.orm import Session

    size = page_size_of(page_size)
    after = decode_page_token("complaints", page_token)
    lower, upper = datetime_bounds(request.day_from, request.day_to)
    now = node.now()
    conditions: list[ColumnElement[bool]] = []
    if request.status:
        conditions.append(Complaint.status == request.status)
    if request.respondent_unit:
        conditions.append(Complaint.respondent_unit == request.respondent_unit)
    if request.overdue_only:
        conditions.append(
            or_(
                and_(Complaint.status == "received", Complaint.decision_due_at < now),
                Complaint.overdue_days > 0,
                exists().where(Alert.complaint_no == Complaint.complaint_no),
            )
        )
    if lower:
        conditions.append(Complaint.received_at >= lower)
    if upper:
        conditions.append(Complaint.received_at < upper)
    if after:
        try:
            received_at = datetime.fromisoformat(str(after[0]))
        except (ValueError, IndexError) as exc:
            raise InvalidArgumentError("page_token is not a token this node issued") from exc
        conditions.append(tuple_(Complaint.received_at, Complaint.complaint_no) < tuple_(received_at, str(after[1])))
    statement = (
        select(Complaint)
        .where(*conditions)
        .order_by(Complaint.received_at.desc(), Complaint.complaint_no.desc())
        .limit(size + 1)
    )
    with node.engine.connect() as conn, Session(bind=conn) as session:
        fetched = list(session.scalars(statement))
    page, more = fetched[:size], len(fetched) > size
    tz = node.tz
    answer = dd.ComplaintsAnswer()
    for complaint in page:
        row = dd.ComplaintRow(
            complaint_no=complaint.complaint_no,
            title=complaint.title,
            complainant_masked=mask_name(complaint.complainant or ""),
            respondent_unit=complaint.respondent_unit,
            handling_unit=complaint.handling_unit,
            status=complaint.status,
            received_at_ms=to_ms(complaint.received_at, tz),
            finding=complaint.finding,
            overdue_days=int(complaint.overdue_days or 0),
            case_no=complaint.case_no or "",
        )
        if complaint.decision_due_at is not None:
            row.decision_due_at_ms = to_ms(complaint.decision_due_at, tz)
        if complaint.concluded_at is not None:
            row.concluded_at_ms = to_ms(complaint.concluded_at, tz)
        answer.complaints.append(row)
    token = ""
    if more and page:
        token = encode_page_token("complaints", [page[-1].received_at.isoformat(), page[-1].complaint_no])
    return answer, token
