"""Reading the metrics back: recomputed from the records, checked against the buckets, summed per group with rates.

``recompute_buckets`` derives every counter in SQL from the records alone, as node.supervision.metrics defines them;
``check_buckets`` (``supnet metrics check``) compares the two in one snapshot; ``rebuild_buckets`` replaces the stored
buckets by the recomputed ones (an upgrade that adds counters asks for it with the node counter
``metrics_rebuild_needed``, acted on where a node is opened for work); ``grouped_stats`` serves ``supnet stats --by``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    Table,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)

from node.domain import workdays_used
from node.errors import InvalidArgumentError
from node.store import (
    Alert,
    Case,
    Complaint,
    Completion,
    Evaluation,
    Item,
    MetricBucket,
    Payment,
    SpecialProcedure,
    Step,
    counter_value,
    lock_revision,
    next_revision,
    set_counter,
)
from node.supervision.metric_definitions import (
    ACCEPTED_COMPLAINT_STATUSES,
    COUNTERS,
    OVERDUE_GAUGE_RULES,
    REFUSED_RESULT_CODES,
    SEVERITY_COUNTERS,
    derived_rates,
    fen,
)

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

__all__ = [
    "GROUPINGS",
    "REBUILD_FLAG",
    "BucketValues",
    "StatsRow",
    "as_date",
    "check_buckets",
    "day_of",
    "grouped_stats",
    "maintained_buckets",
    "rebuild_buckets",
    "rebuild_buckets_if_needed",
    "recompute_buckets",
    "returned_case",
]

log = logging.getLogger(__name__)

_buckets: Table = MetricBucket.__table__  # type: ignore[assignment]
_cases: Table = Case.__table__  # type: ignore[assignment]
_steps: Table = Step.__table__  # type: ignore[assignment]
_procedures: Table = SpecialProcedure.__table__  # type: ignore[assignment]
_completions: Table = Completion.__table__  # type: ignore[assignment]
_payments: Table = Payment.__table__  # type: ignore[assignment]
_evaluations: Table = Evaluation.__table__  # type: ignore[assignment]
_complaints: Table = Complaint.__table__  # type: ignore[assignment]
_alerts: Table = Alert.__table__  # type: ignore[assignment]

BucketValues = dict[tuple[date, str, str], dict[str, int]]


# -- days in SQL ----------------------------------------------------------------------------------------------------
def day_of(conn: Connection, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """SQL for the calendar day of a naive local datetime column (compare with ``as_date`` results)."""
    return _day_in(conn.dialect.name, column)


def _day_in(dialect: str, column: ColumnElement[Any]) -> ColumnElement[Any]:
    if dialect == "sqlite":
        # CAST(... AS DATE) has numeric affinity in SQLite; date() gives 'YYYY-MM-DD'.
        return func.date(column)
    return cast(column, Date)


def as_date(value: Any) -> date:
    """A day value read back from ``day_of`` (a date on PostgreSQL, 'YYYY-MM-DD' text on SQLite)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


# -- recomputation from the raw records -----------------------------------------------------------------------------
def returned_case() -> ColumnElement[bool]:
    """SQL: the case has at least one return step (退件) — what ``cases_returned`` and ``supnet stats`` count."""
    s = _steps.c
    return _cases.c.case_no.in_(select(s.case_no).where(s.action == "return"))


class _Days:
    """Day values read back from SQL, converted once per distinct value (a check reads hundreds of thousands)."""

    def __init__(self) -> None:
        self._seen: dict[Any, date] = {}

    def __call__(self, value: Any) -> date:
        day = self._seen.get(value)
        if day is None:
            day = self._seen[value] = as_date(value)
        return day


def _accumulate(
    result: BucketValues,
    rows: Iterable[Any],
    counter_names: Callable[[Any], Iterable[tuple[str, int]]],
    days: _Days,
) -> None:
    """Add grouped rows (day, department, implementation_code, ...) into ``result``; rows are read by position."""
    for row in rows:
        key = (days(row[0]), row[1], row[2])
        bucket = result.get(key)
        if bucket is None:
            bucket = result[key] = {}
        for name, value in counter_names(row):
            if value:
                bucket[name] = bucket.get(name, 0) + int(value)


@lru_cache(maxsize=4)
def _recompute_statements(dialect: str) -> dict[str, Any]:
    """The statements of ``recompute_buckets`` for one SQL dialect, built once per process.

    Building them (CASE expressions, joins, labels) and deriving SQLAlchemy's cache key from new objects cost more
    than running them on a street's records; ``supnet verify`` asks every node for this recomputation.
    """

    def day(column: ColumnElement[Any]) -> ColumnElement[Any]:
        return _day_in(dialect, column)

    c = _cases.c
    statements: dict[str, Any] = {}
    # received, open_cases: per acceptance day.
    accepted_day = day(c.accepted_at).label("day")
    open_flag = case((c.status == "open", 1), else_=0)
    statements["received"] = select(
        accepted_day, c.department, c.implementation_code, func.count().label("n"), func.sum(open_flag).label("o")
    ).group_by(accepted_day, c.department, c.implementation_code)

    # completions: per completion day; the working days used need the calendar.
    done = _completions.c
    completed_day = day(done.completed_at).label("day")
    accepted = day(c.accepted_at).label("accepted_day")
    early = case((day(done.completed_at) < day(c.promised_due_at), 1), else_=0).label("early")
    on_time = case((done.completed_at <= c.promised_due_at, 1), else_=0).label("on_time")
    legal = case((done.completed_at <= c.legal_due_at, 1), else_=0).label("legal")
    refused = case((done.result_code.in_(sorted(REFUSED_RESULT_CODES)), 1), else_=0).label("refused")
    # (day, department, implementation_code) first: _accumulate reads the bucket key by position.
    group: tuple[ColumnElement[Any], ...] = (completed_day, c.department, c.implementation_code, accepted)
    group += (c.clock_stop_workdays, early, on_time, legal, refused)
    statements["completions"] = (
        select(*group, func.count().label("n"))
        .select_from(_completions.join(_cases, c.case_no == done.case_no))
        .group_by(*group)
    )

    # returned / supplements: per step start day.
    s = _steps.c
    step_day = day(s.started_at).label("day")
    statements["step_kinds"] = (
        select(step_day, c.department, c.implementation_code, s.action, func.count().label("n"))
        .select_from(_steps.join(_cases, c.case_no == s.case_no))
        .where(s.action.in_(["return", "supplement"]))
        .group_by(step_day, c.department, c.implementation_code, s.action)
    )
    statements["steps"] = (
        select(step_day, c.department, c.implementation_code, func.count().label("n"))
        .select_from(_steps.join(_cases, c.case_no == s.case_no))
        .group_by(step_day, c.department, c.implementation_code)
    )

    # cases returned at least once: a cohort count on the acceptance day (退件率's numerator).
    statements["returned"] = (
        select(accepted_day, c.department, c.implementation_code, func.count().label("n"))
        .where(returned_case())
        .group_by(accepted_day, c.department, c.implementation_code)
    )

    # clock stops: per procedure end day.
    p = _procedures.c
    end_day = day(p.ended_at).label("day")
    statements["clock_stops"] = (
        select(end_day, c.department, c.implementation_code, func.count().label("n"), func.sum(p.workdays).label("w"))
        .select_from(_procedures.join(_cases, c.case_no == p.case_no))
        .where(p.ended_at.is_not(None))
        .group_by(end_day, c.department, c.implementation_code)
    )
    # procedure start records: per start day (上报数据 counts the start and the end record).
    start_day = day(p.started_at).label("day")
    statements["procedure_starts"] = (
        select(start_day, c.department, c.implementation_code, func.count().label("n"))
        .select_from(_procedures.join(_cases, c.case_no == p.case_no))
        .group_by(start_day, c.department, c.implementation_code)
    )

    # fees: per payment day; each amount is converted to fen exactly as at write time.
    pay = _payments.c
    paid_day = day(pay.paid_at).label("day")
    statements["fees"] = select(paid_day, c.department, c.implementation_code, pay.amount).select_from(
        _payments.join(_cases, c.case_no == pay.case_no)
    )

    # ratings: per evaluation day.
    ev = _evaluations.c
    evaluated_day = day(ev.evaluated_at).label("day")
    statements["ratings"] = (
        select(evaluated_day, c.department, c.implementation_code, ev.satisfaction_code, func.count().label("n"))
        .select_from(_evaluations.join(_cases, c.case_no == ev.case_no))
        .group_by(evaluated_day, c.department, c.implementation_code, ev.satisfaction_code)
    )

    # complaints: received per received day, accepted per decision day, concluded per concluded day; respondent
    # unit, linked case's item.
    cp = _complaints.c
    linked_item = func.coalesce(c.implementation_code, literal("")).label("implementation_code")
    complaint_join = _complaints.outerjoin(_cases, c.case_no == cp.case_no)
    received_day = day(cp.received_at).label("day")
    statements["complaints_received"] = (
        select(received_day, cp.respondent_unit.label("department"), linked_item, func.count().label("n"))
        .select_from(complaint_join)
        .group_by(received_day, cp.respondent_unit, linked_item)
    )
    decided_day = day(cp.decided_at).label("day")
    statements["complaints_accepted"] = (
        select(decided_day, cp.respondent_unit.label("department"), linked_item, func.count().label("n"))
        .select_from(complaint_join)
        .where(cp.status.in_(ACCEPTED_COMPLAINT_STATUSES), cp.decided_at.is_not(None))
        .group_by(decided_day, cp.respondent_unit, linked_item)
    )
    concluded_day = day(cp.concluded_at).label("day")
    substantiated = case((cp.finding == "substantiated", 1), else_=0)
    statements["complaints_concluded"] = (
        select(
            concluded_day,
            cp.respondent_unit.label("department"),
            linked_item,
            func.count().label("n"),
            func.sum(substantiated).label("s"),
        )
        .select_from(complaint_join)
        .where(cp.status == "concluded", cp.concluded_at.is_not(None))
        .group_by(concluded_day, cp.respondent_unit, linked_item)
    )

    # alerts: per breach day (docs/domain.md §5: when the rule was broken, not when supnet noticed) and severity.
    a = _alerts.c
    breach_day = day(a.breached_at).label("day")
    statements["alerts"] = select(
        breach_day, a.department, a.implementation_code, a.severity, func.count().label("n")
    ).group_by(breach_day, a.department, a.implementation_code, a.severity)

    # open-overdue gauges: open cases holding an R02 / R03 alert, on their acceptance day.
    for rule_id, gauge in OVERDUE_GAUGE_RULES.items():
        holders = select(a.case_no).where(a.rule_id == rule_id, a.case_no.is_not(None))
        statements[f"gauge:{gauge}"] = (
            select(accepted_day, c.department, c.implementation_code, func.count().label("n"))
            .where(c.status == "open", c.case_no.in_(holders))
            .group_by(accepted_day, c.department, c.implementation_code)
        )
    return statements


def recompute_buckets(conn: Connection, cal: WorkCalendar) -> dict[tuple[date, str, str], dict[str, int]]:
    """Every bucket's counters derived from the raw records alone, keyed (day, department, implementation_code).

    Only non-zero counters are present. Grouping is done in SQL; only the working-day count of completions
    needs the calendar, once per distinct (accepted day, completed day, clock-stop days).
    """
    result: BucketValues = {}
    days = _Days()
    q = _recompute_statements(conn.dialect.name)

    def add(name: str, counters: Callable[[Any], Iterable[tuple[str, int]]]) -> None:
        _accumulate(result, conn.execute(q[name]), counters, days)

    add("received", lambda r: (("received", r.n), ("open_cases", r.o), ("records_reported", r.n)))

    @lru_cache(maxsize=65536)
    def used(accepted_on: date, completed_on: date, stops: int) -> int:
        return workdays_used(cal, datetime.combine(accepted_on, time()), datetime.combine(completed_on, time()), stops)

    def completion_counters(r: Any) -> Iterable[tuple[str, int]]:
        n = int(r.n)
        return (
            ("completed", n),
            ("records_reported", n),
            ("completed_early", n * r.early),
            ("completed_on_time", n * r.on_time),
            ("completed_within_legal", n * r.legal),
            ("processing_workdays", n * used(days(r.accepted_day), days(r.day), int(r.clock_stop_workdays))),
            ("refused", n * r.refused),
        )

    add("completions", completion_counters)
    add("step_kinds", lambda r: ((("return_steps" if r.action == "return" else "supplements"), r.n),))
    add("steps", lambda r: (("records_reported", r.n),))
    add("returned", lambda r: (("cases_returned", r.n),))
    add("clock_stops", lambda r: (("clock_stops", r.n), ("clock_stop_workdays", r.w), ("records_reported", r.n)))
    add("procedure_starts", lambda r: (("records_reported", r.n),))
    add("fees", lambda r: (("fees_count", 1), ("fees_fen", fen(r.amount)), ("records_reported", 1)))
    add("ratings", lambda r: ((f"ratings_{int(r.satisfaction_code)}", r.n), ("records_reported", r.n)))
    add("complaints_received", lambda r: (("complaints_received", r.n),))
    add("complaints_accepted", lambda r: (("complaints_accepted", r.n),))
    add("complaints_concluded", lambda r: (("complaints_concluded", r.n), ("complaints_substantiated", r.s)))
    add("alerts", lambda r: ((SEVERITY_COUNTERS.get(r.severity, "reminders"), r.n),))
    for gauge in OVERDUE_GAUGE_RULES.values():
        add(f"gauge:{gauge}", lambda r, gauge=gauge: ((gauge, r.n),))  # type: ignore[misc]

    return {key: values for key, values in result.items() if values}


def maintained_buckets(conn: Connection) -> BucketValues:
    """The stored buckets' non-zero counters, keyed like ``recompute_buckets``."""
    b = _buckets.c
    rows = conn.execute(select(b.day, b.department, b.implementation_code, *(b[name] for name in COUNTERS)))
    result: BucketValues = {}
    days = _Days()
    for day, department, implementation_code, *counters in rows:
        values = {name: int(value) for name, value in zip(COUNTERS, counters, strict=True) if value}
        if values:
            result[(days(day), department, implementation_code)] = values
    return result


def _describe_differences(maintained: BucketValues, recomputed: BucketValues) -> list[str]:
    differences: list[str] = []
    for key in sorted(set(maintained) | set(recomputed)):
        kept, derived = maintained.get(key, {}), recomputed.get(key, {})
        if kept == derived:
            continue
        day, department, implementation_code = key
        where = f"bucket {day.isoformat()} / department {department!r} / item {implementation_code or '-'}"
        for name in COUNTERS:
            if kept.get(name, 0) != derived.get(name, 0):
                differences.append(
                    f"{where}: {name} maintained {kept.get(name, 0)}, recomputed from records {derived.get(name, 0)}"
                )
    return differences


def check_buckets(node: Node) -> list[str]:
    """Recompute every bucket from the raw records and list each difference from the maintained ones ([] = ok).

    Both sides are read in one snapshot (REPEATABLE READ on PostgreSQL, one read transaction on SQLite), so a
    concurrent import cannot make a consistent database look inconsistent.
    """
    with node.engine.connect() as raw_conn:
        conn = raw_conn
        if conn.dialect.name == "postgresql":
            conn = raw_conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            # pysqlite only opens transactions for writes; an explicit BEGIN pins one WAL snapshot for all reads.
            conn.exec_driver_sql("BEGIN")
        try:
            maintained = maintained_buckets(conn)
            recomputed = recompute_buckets(conn, node.calendar)
        finally:
            conn.rollback()
    differences = _describe_differences(maintained, recomputed)
    log.info(
        "metrics check: %s buckets maintained, %s recomputed, %s differences",
        len(maintained),
        len(recomputed),
        len(differences),
    )
    return differences


# -- rebuilding the stored buckets ----------------------------------------------------------------------------------
REBUILD_FLAG = "metrics_rebuild_needed"
_KEY_NAMES = ("day", "department", "implementation_code")


def _item_attributes(conn: Connection) -> dict[str, tuple[str, str]]:
    """implementation_code -> (basic_code, item_type_code) of a bucket the rebuild creates (the cases' over items')."""
    found = {
        str(row[0]): (row[1] or "", row[2] or "")
        for row in conn.execute(select(Item.implementation_code, Item.basic_code, Item.type_code))
    }
    c = _cases.c
    found.update(
        {
            str(row[0]): (row[1] or "", row[2] or "")
            for row in conn.execute(select(c.implementation_code, c.basic_code, c.item_type_code).distinct())
        }
    )
    return found


def _rebuild_in(conn: Connection, cal: WorkCalendar) -> int:
    """Replace the stored buckets by the recomputed ones inside the caller's transaction; returns buckets changed.

    The metric revision row is taken FIRST (every metric writer waits); each changed bucket gets one new revision, so
    the next incremental report carries it. A bucket no longer backed by records is set to zero, never deleted: the
    report builder has to see its key change to send the zeros upward.
    """
    lock_revision(conn)
    recomputed = recompute_buckets(conn, cal)
    b = _buckets.c
    stored: BucketValues = {}
    days = _Days()
    for day, department, implementation_code, *counters in conn.execute(
        select(b.day, b.department, b.implementation_code, *(b[name] for name in COUNTERS))
    ):
        stored[(days(day), department, implementation_code)] = {
            name: int(value) for name, value in zip(COUNTERS, counters, strict=True) if value
        }
    changed = [key for key in sorted(set(stored) | set(recomputed)) if stored.get(key, {}) != recomputed.get(key, {})]
    if not changed:
        return 0
    revision = next_revision(conn)

    def values_of(key: tuple[date, str, str]) -> dict[str, Any]:
        derived = recomputed.get(key, {})
        return {**{f"v_{name}": derived.get(name, 0) for name in COUNTERS}, "v_revision": revision}

    existing = [key for key in changed if key in stored]
    if existing:
        statement = (
            update(_buckets)
            .where(*(b[name] == bindparam(f"k_{name}") for name in _KEY_NAMES))
            .values({name: bindparam(f"v_{name}") for name in (*COUNTERS, "revision")})
        )
        conn.execute(
            statement,
            [{**dict(zip((f"k_{n}" for n in _KEY_NAMES), key, strict=True)), **values_of(key)} for key in existing],
        )
    created = [key for key in changed if key not in stored]
    if created:
        attributes = _item_attributes(conn)
        rows = []
        for key in created:
            basic_code, item_type_code = attributes.get(key[2], ("", ""))
            derived = recomputed[key]
            rows.append(
                {
                    **dict(zip(_KEY_NAMES, key, strict=True)),
                    "basic_code": basic_code,
                    "item_type_code": item_type_code,
                    **{name: derived.get(name, 0) for name in COUNTERS},
                    "revision": revision,
                }
            )
        conn.execute(insert(_buckets), rows)
    log.info("metric buckets rebuilt from the records: %s changed, revision %s", len(changed), revision)
    return len(changed)


def rebuild_buckets(node: Node) -> int:
    """Recompute every bucket from the raw records and replace the stored ones in one transaction (buckets changed).

    Clears ``metrics_rebuild_needed`` in the same transaction.
    """
    with node.engine.begin() as conn:
        changed = _rebuild_in(conn, node.calendar)
        if counter_value(conn, REBUILD_FLAG):
            set_counter(conn, REBUILD_FLAG, 0)
    return changed


def rebuild_buckets_if_needed(node: Node) -> bool:
    """Rebuild the buckets when an upgrade asked for it (``metrics_rebuild_needed``); True when it ran.

    Cheap when the flag is clear (one read, no lock), so it runs wherever a node is opened for work; two processes
    opening at once rebuild once (the flag is read again under the revision lock).
    """
    with node.engine.connect() as conn:
        if not counter_value(conn, REBUILD_FLAG):
            return False
    with node.engine.begin() as conn:
        lock_revision(conn)
        if not counter_value(conn, REBUILD_FLAG):
            return False
        _rebuild_in(conn, node.calendar)
        set_counter(conn, REBUILD_FLAG, 0)
    return True


# -- grouped statistics ---------------------------------------------------------------------------------------------
GROUPINGS: tuple[str, ...] = ("dept", "item", "day", "month")


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One group of summed counters with its derived rates."""

    key: str
    counters: dict[str, int]
    rates: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"key": self.key, **self.counters, **{name: value for name, value in self.rates.items()}}


def grouped_stats(
    conn: Connection, by: str, date_from: date | None = None, date_to: date | None = None
) -> list[StatsRow]:
    """Sum the maintained buckets per department, item, day or month within [date_from, date_to], with rates.

    The gauges (open cases, open overdue) are summed over the accepted-day cohorts in the range.
    """
    if by not in GROUPINGS:
        raise InvalidArgumentError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    if date_from and date_to and date_to < date_from:
        raise InvalidArgumentError(f"--to {date_to.isoformat()} is before --from {date_from.isoformat()}")
    b = _buckets.c
    key_column: ColumnElement[Any]
    if by == "dept":
        key_column = b.department
    elif by == "item":
        key_column = b.implementation_code
    else:
        key_column = b.day
    conditions = []
    if date_from:
        conditions.append(b.day >= date_from)
    if date_to:
        conditions.append(b.day <= date_to)
    statement = select(key_column.label("key"), *(func.sum(b[name]).label(name) for name in COUNTERS)).group_by(
        key_column
    )
    if conditions:
        statement = statement.where(and_(*conditions))
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for row in conn.execute(statement):
        raw_key = row.key
        if by in ("day", "month"):
            day = as_date(raw_key)
            key = day.isoformat()[:7] if by == "month" else day.isoformat()
        else:
            key = str(raw_key)
        group = totals[key]
        for name in COUNTERS:
            group[name] += int(row._mapping[name] or 0)
    return [StatsRow(key, dict(values), derived_rates(values)) for key, values in sorted(totals.items())]
