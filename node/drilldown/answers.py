"""Local drill-down answers: summaries, ranking, cases, case detail, alerts, complaints and stored reports.

Every function reads this node's own database and returns the proto message of one answer kind plus
the token of the next page ('' on the last page). Counters are additive sums (own ``metric_buckets``
plus each child's latest state in ``child_buckets``); rates are derived by whoever shows them.
Personal data (applicant names, ID numbers, complainants) leaves only masked.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, DateTime, Integer, and_, bindparam, exists, func, or_, select, tuple_
from sqlalchemy import case as sql_case
from sqlalchemy.sql.elements import ColumnElement

from federation import COUNTER_FIELDS, DriverStatement, InvalidArgumentError, NotFoundError, outbox, received_reports
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import Completeness, Counters, SignedEnvelope
from node.app import Node
from node.drilldown.masking import mask_id_number, mask_name
from node.reporting import ChildStatus, children_status, subtree_completeness
from node.store import (
    Alert,
    Case,
    ChildBucket,
    Complaint,
    Completion,
    Evaluation,
    Item,
    MetricBucket,
    Payment,
    SpecialProcedure,
    Step,
)

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
SUMMARY_DEFAULT_PAGE_SIZE = 1000
SUMMARY_MAX_PAGE_SIZE = 5000

GROUP_CHILD = dd.SUMMARY_GROUP_BY_CHILD
GROUP_ITEM = dd.SUMMARY_GROUP_BY_ITEM
GROUP_DAY = dd.SUMMARY_GROUP_BY_DAY
GROUP_MONTH = dd.SUMMARY_GROUP_BY_MONTH

CounterDict = dict[str, int]


# --- small helpers -----------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1)
_MILLISECOND = timedelta(milliseconds=1)


def to_ms(value: datetime, tz: ZoneInfo) -> int:
    """Unix milliseconds of a naive local date-time of the node (a zone it carries is ignored)."""
    wall = value.replace(tzinfo=None) if value.tzinfo is not None else value
    offset = tz.utcoffset(wall) or timedelta(0)
    # Integer arithmetic: exact (a float timestamp can be a millisecond off) and several times faster, which
    # counts when a page of cases converts four date-times per row on the drill-down path.
    return (wall - _EPOCH - offset) // _MILLISECOND


def _parse_day(text: str, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"{field} {text!r} is not a day YYYY-MM-DD") from exc


def _day_range(day_from: str, day_to: str) -> tuple[date | None, date | None]:
    start = _parse_day(day_from, "day_from")
    end = _parse_day(day_to, "day_to")
    if start and end and start > end:
        raise InvalidArgumentError(f"day_from {day_from} is after day_to {day_to}")
    return start, end


def _datetime_bounds(day_from: str, day_to: str) -> tuple[datetime | None, datetime | None]:
    """Half-open [start, end) date-time bounds of an inclusive day range."""
    start, end = _day_range(day_from, day_to)
    lower = datetime.combine(start, datetime.min.time()) if start else None
    upper = datetime.combine(end + timedelta(days=1), datetime.min.time()) if end else None
    return lower, upper


def page_size_of(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The page size to use: the default for 0, never above the maximum."""
    if requested <= 0:
        return default
    return min(requested, maximum)


def encode_page_token(kind: str, position: Sequence[Any]) -> str:
    """An opaque token naming the answer kind and the last position served (keyset paging)."""
    raw = json.dumps({"k": kind, "p": list(position)}, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii")


def decode_page_token(kind: str, token: str) -> list[Any] | None:
    """The position in a token from :func:`encode_page_token`; None for no token; error if it is not ours."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise InvalidArgumentError("page_token is not a token this node issued") from exc
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("p"), list):
        raise InvalidArgumentError(f"page_token does not belong to a {kind} query")
    position: list[Any] = data["p"]
    return position


def _zero_counters() -> CounterDict:
    return dict.fromkeys(COUNTER_FIELDS, 0)


def _add_into(total: CounterDict, values: Mapping[str, Any]) -> None:
    for name in COUNTER_FIELDS:
        total[name] += int(values[name] or 0)


def _counters(values: Mapping[str, int]) -> Counters:
    return Counters(**{name: int(values[name]) for name in COUNTER_FIELDS if values.get(name)})


def _sum_columns(table: Any) -> list[ColumnElement[Any]]:
    return [func.coalesce(func.sum(getattr(table, name)), 0).label(name) for name in COUNTER_FIELDS]


# --- children and completeness ------------------------------------------------------------------


def _completeness_of(status: ChildStatus) -> Completeness:
    return Completeness(
        nodes_in_subtree=status.nodes_in_subtree, nodes_reported_in_window=status.nodes_reported_in_window
    )


def _subtree_completeness(statuses: Sequence[ChildStatus]) -> Completeness:
    total = subtree_completeness(statuses)
    return Completeness(
        nodes_in_subtree=total.nodes_in_subtree, nodes_reported_in_window=total.nodes_reported_in_window
    )


def _last_report_ms(node: Node, status: ChildStatus | None) -> int:
    if status is None or status.last_received_at is None:
        return 0
    return to_ms(status.last_received_at, node.tz)


# --- summary ------------------------------------------------------------------------------------


def _bucket_filters(table: Any, request: dd.SummaryRequest | dd.RankingRequest) -> list[ColumnElement[bool]]:
    start, end = _day_range(request.day_from, request.day_to)
    conditions: list[ColumnElement[bool]] = []
    if start:
        conditions.append(table.day >= start)
    if end:
        conditions.append(table.day <= end)
    if request.basic_code:
        conditions.append(table.basic_code == request.basic_code)
    item_type = getattr(request, "item_type_code", "")
    if item_type:
        conditions.append(table.item_type_code == item_type)
    return conditions


def _own_grouped(conn: Connection, request: dd.SummaryRequest | dd.RankingRequest, key: Any) -> dict[str, CounterDict]:
    conditions = _bucket_filters(MetricBucket, request)
    statement = select(key.label("key"), *_sum_columns(MetricBucket)).where(*conditions).group_by(key)
    return {str(row.key): {name: int(row._mapping[name]) for name in COUNTER_FIELDS} for row in conn.execute(statement)}


def _own_total(conn: Connection, request: dd.SummaryRequest | dd.RankingRequest) -> CounterDict:
    statement = select(*_sum_columns(MetricBucket)).where(*_bucket_filters(MetricBucket, request))
    row = conn.execute(statement).one()
    return {name: int(row._mapping[name]) for name in COUNTER_FIELDS}


def _children_grouped(
    conn: Connection, request: dd.SummaryRequest | dd.RankingRequest, key: Any
) -> dict[str, CounterDict]:
    conditions = _bucket_filters(ChildBucket, request)
    statement = select(key.label("key"), *_sum_columns(ChildBucket)).where(*conditions).group_by(key)
    return {str(row.key): {name: int(row._mapping[name]) for name in COUNTER_FIELDS} for row in conn.execute(statement)}


def own_counters_from_records(node: Node, request: dd.SummaryRequest) -> dict[tuple[date, str], CounterDict]:
    """The node's own counters recomputed from its raw records, per (day, basic code), filters applied (audit)."""
    from node.supervision import recompute_buckets

    start, end = _day_range(request.day_from, request.day_to)
    result: dict[tuple[date, str], CounterDict] = {}
    with node.engine.connect() as conn:
        items = {row.implementation_code: (row.basic_code, row.type_code) for row in conn.execute(select(Item))}
        recomputed = recompute_buckets(conn, node.calendar)
    for (day, _department, implementation_code), values in recomputed.items():
        basic_code, type_code = items.get(implementation_code, ("", ""))
        if (start and day < start) or (end and day > end):
            continue
        if request.basic_code and basic_code != request.basic_code:
            continue
        if request.item_type_code and type_code != request.item_type_code:
            continue
        total = result.setdefault((day, basic_code), _zero_counters())
        for name in COUNTER_FIELDS:
            total[name] += int(values.get(name, 0))
    return result


def _fold_records(recomputed: Mapping[tuple[date, str], CounterDict], group_by: int) -> dict[str, CounterDict]:
    grouped: dict[str, CounterDict] = {}
    for (day, basic_code), values in recomputed.items():
        if group_by == GROUP_ITEM:
            key = basic_code
        elif group_by == GROUP_MONTH:
            key = day.isoformat()[:7]
        else:
            key = day.isoformat()
        _add_into(grouped.setdefault(key, _zero_counters()), values)
    return grouped


def _fold_days_to_months(rows: Mapping[str, CounterDict]) -> dict[str, CounterDict]:
    months: dict[str, CounterDict] = {}
    for day, values in rows.items():
        _add_into(months.setdefault(day[:7], _zero_counters()), values)
    return months


def _item_labels(conn: Connection, codes: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    statement = (
        select(Item.basic_code, func.min(Item.name)).where(Item.basic_code.in_(wanted)).group_by(Item.basic_code)
    )
    return {str(code): str(name) for code, name in conn.execute(statement)}


def answer_summary(
    node: Node, request: dd.SummaryRequest, page_size: int, page_token: str, *, own_from_records: bool = False
) -> tuple[dd.SummaryAnswer, str]:
    """Subtree totals grouped by child, item, day or month; with ``own_from_records`` only own data, recomputed."""
    group_by = request.group_by or GROUP_CHILD
    if group_by not in (GROUP_CHILD, GROUP_ITEM, GROUP_DAY, GROUP_MONTH):
        raise InvalidArgumentError(f"summary group_by {group_by} is not one of CHILD, ITEM, DAY, MONTH")
    if own_from_records and group_by == GROUP_CHILD:
        raise InvalidArgumentError(
            "a summary recomputed from records covers own data only: group by item, day or month"
        )
    after = decode_page_token("summary", page_token)
    size = page_size_of(page_size, SUMMARY_DEFAULT_PAGE_SIZE, SUMMARY_MAX_PAGE_SIZE)
    extra: dict[str, dd.SummaryRow] = {}
    with node.engine.connect() as conn:
        states = children_status(node, conn)
        completeness = _subtree_completeness(states)
        if own_from_records:
            rows = _fold_records(own_counters_from_records(node, request), group_by)
            completeness = Completeness(nodes_in_subtree=1, nodes_reported_in_window=1)
        elif group_by == GROUP_CHILD:
            rows = _children_grouped(conn, request, ChildBucket.child_id)
            rows[node.config.id] = _own_total(conn, request)
            for state in states:
                rows.setdefault(state.child_id, _zero_counters())
                extra[state.child_id] = dd.SummaryRow(
                    completeness=_completeness_of(state),
                    last_report_sequence=state.last_sequence or 0,
                    last_report_at_ms=_last_report_ms(node, state),
                )
            extra[node.config.id] = dd.SummaryRow(
                label=node.config.name, completeness=Completeness(nodes_in_subtree=1, nodes_reported_in_window=1)
            )
        else:
            column_key = MetricBucket.basic_code if group_by == GROUP_ITEM else MetricBucket.day
            child_key = ChildBucket.basic_code if group_by == GROUP_ITEM else ChildBucket.day
            rows = _own_grouped(conn, request, column_key)
            for key, values in _children_grouped(conn, request, child_key).items():
                _add_into(rows.setdefault(key, _zero_counters()), values)
            if group_by == GROUP_MONTH:
                rows = _fold_days_to_months(rows)
        labels = _item_labels(conn, rows) if group_by == GROUP_ITEM else {}
    total = _zero_counters()
    for values in rows.values():
        _add_into(total, values)
    keys = sorted(rows)
    if after:
        keys = [key for key in keys if key > str(after[0])]
    page, more = keys[:size], len(keys) > size
    answer = dd.SummaryAnswer(group_by=group_by, total=_counters(total), completeness=completeness)
    for key in page:
        row = answer.rows.add()
        if key in extra:
            row.CopyFrom(extra[key])
        row.key = key
        row.label = row.label or labels.get(key, "")
        row.counters.CopyFrom(_counters(rows[key]))
    return answer, encode_page_token("summary", [page[-1]]) if more and page else ""


# --- ranking ------------------------------------------------------------------------------------

# metric -> (numerator counters, denominator counters or None for a plain count, higher is better)
_RANKING: dict[int, tuple[tuple[str, ...], tuple[str, ...] | None, bool]] = {
    dd.RANKING_METRIC_EARLY_COMPLETION_RATE: (("completed_early",), ("completed",), True),
    dd.RANKING_METRIC_ON_TIME_RATE: (("completed_on_time",), ("completed",), True),
    dd.RANKING_METRIC_RETURN_RATE: (("returned",), ("received",), False),
    dd.RANKING_METRIC_SATISFACTION_RATE: (
        ("ratings_1", "ratings_2", "ratings_3"),
        ("ratings_1", "ratings_2", "ratings_3", "ratings_4", "ratings_5"),
        True,
    ),
    dd.RANKING_METRIC_COMPLAINT_CLOSURE_RATE: (("complaints_concluded",), ("complaints_received",), True),
    dd.RANKING_METRIC_OPEN_OVERDUE_PROMISED: (("open_overdue_promised",), None, False),
    dd.RANKING_METRIC_OPEN_OVERDUE_LEGAL: (("open_overdue_legal",), None, False),
    dd.RANKING_METRIC_RED_CARDS: (("red_cards",), None, False),
    dd.RANKING_METRIC_YELLOW_CARDS: (("yellow_cards",), None, False),
}


def metric_value(metric: int, values: Mapping[str, int]) -> tuple[float, int, int]:
    """(value, numerator, denominator) of a ranking metric; a count has denominator 0 and value = count."""
    numerator_names, denominator_names, _ = _RANKING[metric]
    numerator = sum(int(values.get(name, 0)) for name in numerator_names)
    if denominator_names is None:
        return float(numerator), numerator, 0
    denominator = sum(int(values.get(name, 0)) for name in denominator_names)
    return (numerator / denominator if denominator else 0.0), numerator, denominator


def answer_ranking(node: Node, request: dd.RankingRequest) -> tuple[dd.RankingAnswer, str]:
    """Rank the children (and this node's own data as one entry) by one derived metric; ties share a rank."""
    metric = request.metric or dd.RANKING_METRIC_EARLY_COMPLETION_RATE
    if metric not in _RANKING:
        raise InvalidArgumentError(f"ranking metric {metric} is not known")
    _, denominator_names, higher_is_better = _RANKING[metric]
    with node.engine.connect() as conn:
        states = {state.child_id: state for state in children_status(node, conn)}
        rows = _children_grouped(conn, request, ChildBucket.child_id)
        own = _own_total(conn, request)
    entries: list[dd.RankingRow] = []
    for node_id in sorted({*states, *rows, node.config.id}):
        values = own if node_id == node.config.id else rows.get(node_id, _zero_counters())
        value, numerator, denominator = metric_value(metric, values)
        state = states.get(node_id)
        entries.append(
            dd.RankingRow(
                node_id=node_id,
                label=node.config.name if node_id == node.config.id else "",
                value=value,
                numerator=numerator,
                denominator=denominator,
                counters=_counters(values),
                last_report_sequence=(state.last_sequence or 0) if state else 0,
                last_report_at_ms=_last_report_ms(node, state),
                stale=state is not None and state.state != "fresh",
            )
        )
    best_first = higher_is_better != request.worst_first

    def order(row: dd.RankingRow) -> tuple[int, float, str]:
        # A rate over nothing (e.g. no completed cases) cannot be compared: such entries go last.
        unrated = denominator_names is not None and row.denominator == 0
        return (1 if unrated else 0, -row.value if best_first else row.value, row.node_id)

    entries.sort(key=order)
    answer = dd.RankingAnswer(metric=metric)
    previous: tuple[int, float] | None = None
    rank = 0
    for position, entry in enumerate(entries, start=1):
        key = (1 if denominator_names is not None and entry.denominator == 0 else 0, round(entry.value, 12))
        if key != previous:
            rank = position
            previous = key
        entry.rank = rank
        answer.rows.append(entry)
    return answer, ""


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
    lower, upper = _datetime_bounds(request.day_from, request.day_to)
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
    """The node's own alerts, newest first, filtered and paged."""
    from sqlalchemy.orm import Session

    size = page_size_of(page_size)
    after = decode_page_token("alerts", page_token)
    lower, upper = _datetime_bounds(request.day_from, request.day_to)
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
        conditions.append(Alert.raised_at >= lower)
    if upper:
        conditions.append(Alert.raised_at < upper)
    if after:
        try:
            raised_at, alert_id = datetime.fromisoformat(str(after[0])), int(after[1])
        except (ValueError, IndexError, TypeError) as exc:
            raise InvalidArgumentError("page_token is not a token this node issued") from exc
        conditions.append(tuple_(Alert.raised_at, Alert.id) < tuple_(raised_at, alert_id))
    statement = select(Alert).where(*conditions).order_by(Alert.raised_at.desc(), Alert.id.desc()).limit(size + 1)
    with node.engine.connect() as conn, Session(bind=conn) as session:
        fetched = list(session.scalars(statement))
    page, more = fetched[:size], len(fetched) > size
    answer = dd.AlertsAnswer(alerts=[_alert_row(node, alert) for alert in page])
    token = encode_page_token("alerts", [page[-1].raised_at.isoformat(), page[-1].id]) if more and page else ""
    return answer, token


# --- complaints ---------------------------------------------------------------------------------


def answer_complaints(
    node: Node, request: dd.ComplaintsRequest, page_size: int, page_token: str
) -> tuple[dd.ComplaintsAnswer, str]:
    """The node's own complaints, newest first; complainants masked."""
    from sqlalchemy.orm import Session

    size = page_size_of(page_size)
    after = decode_page_token("complaints", page_token)
    lower, upper = _datetime_bounds(request.day_from, request.day_to)
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


# --- stored reports -----------------------------------------------------------------------------


def stored_report(conn: Connection, node: Node, node_id: str, sequence: int) -> SignedEnvelope:
    """A report envelope exactly as signed: this node's own (outbox) or one received from a child."""
    if node_id == node.config.id:
        table, conditions = outbox, []
    elif node_id in {child.id for child in node.config.federation.children}:
        table, conditions = received_reports, [received_reports.c.child_id == node_id]
    else:
        raise NotFoundError(
            f"node {node.config.id} holds reports of itself and its children only, not of {node_id}; "
            f"ask {node_id}'s parent"
        )
    if sequence:
        conditions.append(table.c.sequence == sequence)
    statement = select(table.c.envelope, table.c.sequence).where(*conditions).order_by(table.c.sequence.desc()).limit(1)
    row = conn.execute(statement).first()
    if row is None:
        which = f"#{sequence}" if sequence else "any report"
        raise NotFoundError(f"node {node.config.id} holds no report {which} of {node_id}")
    envelope = SignedEnvelope()
    envelope.ParseFromString(bytes(row.envelope))
    return envelope


def answer_report(node: Node, request: dd.ReportRequest) -> tuple[dd.ReportAnswer, str]:
    """A stored report by (node, sequence); sequence 0 means the latest."""
    node_id = request.node_id or node.config.id
    with node.engine.connect() as conn:
        envelope = stored_report(conn, node, node_id, int(request.sequence))
    return dd.ReportAnswer(report=envelope), ""


AnswerFunction = Callable[[Node, dd.QueryBody], tuple[Any, str]]


def answer_locally(node: Node, body: dd.QueryBody) -> tuple[str, Any, str]:
    """Dispatch a query body addressed to this node: (answer field name, answer message, next page token)."""
    kind = body.WhichOneof("request")
    if kind == "summary":
        own_from_records = body.summary.own_from_records
        answer, token = answer_summary(
            node, body.summary, body.page_size, body.page_token, own_from_records=own_from_records
        )
        return kind, answer, token
    if kind == "ranking":
        ranking, token = answer_ranking(node, body.ranking)
        return kind, ranking, token
    if kind == "cases":
        cases, token = answer_cases(node, body.cases, body.page_size, body.page_token)
        return kind, cases, token
    if kind == "case_detail":
        detail, token = answer_case_detail(node, body.case_detail)
        return kind, detail, token
    if kind == "alerts":
        alerts, token = answer_alerts(node, body.alerts, body.page_size, body.page_token)
        return kind, alerts, token
    if kind == "complaints":
        complaints, token = answer_complaints(node, body.complaints, body.page_size, body.page_token)
        return kind, complaints, token
    if kind == "report":
        report, token = answer_report(node, body.report)
        return kind, report, token
    raise InvalidArgumentError("query names no request (summary, ranking, cases, case_detail, alerts, ...)")
