"""Metric definitions: THE one place saying what every additive counter counts, on which day and for whom.

Buckets are keyed by (day, department, implementation_code) and also carry the item's basic code and type code.
They are kept up to date at write time (the import's MetricsListener, the rules' alerts, the complaint workflow),
never by scanning cases at report time; ``recompute_buckets`` derives the same numbers from the raw records and
``check_buckets`` (``supnet metrics check``) compares the two.

| counter                  | incremented by                                              | day attributed        |
|--------------------------|-------------------------------------------------------------|-----------------------|
| received                 | an acceptance (case accepted)                               | accepted_at           |
| completed                | a completion                                                | completed_at          |
| completed_early          | completion on a day before the promised due day (is_early)  | completed_at          |
| completed_on_time        | completion with completed_at <= promised_due_at             | completed_at          |
| completed_within_legal   | completion with completed_at <= legal_due_at                | completed_at          |
| processing_workdays      | completion: workdays_used (working days minus clock stops)  | completed_at          |
| refused                  | completion with result_code 2 (refused) or 3 (not accepted) | completed_at          |
| returned                 | a step with action 'return' (退回)                           | the step's started_at |
| supplements              | a step with action 'supplement' (补正)                       | the step's started_at |
| clock_stops              | a special procedure ended (特别程序结束)                      | the procedure's ended_at |
| clock_stop_workdays      | the ended procedure's working days                          | the procedure's ended_at |
| fees_count / fees_fen    | a payment: 1 / amount in fen (分, yuan × 100, half-up)        | paid_at               |
| ratings_1 … ratings_5    | an evaluation with satisfaction code N                      | evaluated_at          |
| complaints_received      | a complaint                                                 | received_at           |
| complaints_concluded     | a complaint concluded (complaints.py)                      | concluded_at          |
| complaints_substantiated | a concluded complaint found substantiated                   | concluded_at          |
| reminders                | an alert of severity reminder raised                        | the alert's raised_at |
| yellow_cards             | an alert of severity yellow raised                          | the alert's raised_at |
| red_cards                | an alert of severity red raised (incl. R04 escalations)     | the alert's raised_at |
| open_cases               | GAUGE: +1 on acceptance, −1 on completion                   | accepted_at (cohort)  |
| open_overdue_promised    | GAUGE: open cases holding an R02 (promise broken) alert     | accepted_at (cohort)  |
| open_overdue_legal       | GAUGE: open cases holding an R03 (law broken) alert         | accepted_at (cohort)  |

A special procedure that ends after its case was completed re-times the case (deadlines, clock-stop days): that
case's completion counters are moved from the old timing to the new one on the same completed day.

Department and item: case-linked counters use the case's department (受理单位) and implementation code; complaint
counters use the respondent unit (被投诉单位) and the linked case's item ("" without a linked case); alert counters
use the alert's department and implementation code.

The three gauges are cohort gauges on the case's acceptance day: the value of a bucket is how many of the cases
accepted that day are open (and overdue) NOW. That keeps them additive and exactly recomputable from the database.
The overdue gauges move +1 when an R02/R03 alert is raised on an open case (alerts.raise_alerts) and −1 when a
case holding one completes (the RulesListener).

Every write bumps ``node_counters['metric_revision']`` and stamps each changed bucket's ``revision``, so a report
builder can send "buckets with revision > last acknowledged". Writers take the revision row first (lock_revision /
add_to_buckets), which serializes metric writers: revisions follow commit order and gauge updates never race.

Derived rates (``derived_rates``) are never stored; they are computed from summed counters where they are shown.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    select,
)

from node.domain import is_early, workdays_used
from node.errors import InvalidArgumentError
from node.store import (
    Alert,
    Case,
    Complaint,
    Completion,
    Evaluation,
    MetricBucket,
    Payment,
    SpecialProcedure,
    Step,
    current_revision,
    next_revision,
)

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

__all__ = [
    "COUNTERS",
    "GAUGES",
    "RATE_DEFINITIONS",
    "BucketKey",
    "Deltas",
    "StatsRow",
    "add_record_deltas",
    "add_to_buckets",
    "check_buckets",
    "day_of",
    "derived_rates",
    "fen",
    "grouped_stats",
    "maintained_buckets",
    "recompute_buckets",
    "record_deltas",
]

log = logging.getLogger(__name__)

COUNTERS: tuple[str, ...] = (
    "received",
    "completed",
    "completed_early",
    "completed_on_time",
    "completed_within_legal",
    "processing_workdays",
    "returned",
    "supplements",
    "refused",
    "clock_stops",
    "clock_stop_workdays",
    "fees_count",
    "fees_fen",
    "ratings_1",
    "ratings_2",
    "ratings_3",
    "ratings_4",
    "ratings_5",
    "complaints_received",
    "complaints_concluded",
    "complaints_substantiated",
    "reminders",
    "yellow_cards",
    "red_cards",
    "open_cases",
    "open_overdue_promised",
    "open_overdue_legal",
)
GAUGES: frozenset[str] = frozenset({"open_cases", "open_overdue_promised", "open_overdue_legal"})
_COUNTER_INDEX = {name: index for index, name in enumerate(COUNTERS)}
SEVERITY_COUNTERS: dict[str, str] = {"reminder": "reminders", "yellow": "yellow_cards", "red": "red_cards"}
REFUSED_RESULT_CODES = frozenset({"2", "3"})
# Rule ids whose alerts feed the open-overdue gauges (see rulebook.py; kept literal to avoid a cycle).
OVERDUE_GAUGE_RULES: dict[str, str] = {"R02": "open_overdue_promised", "R03": "open_overdue_legal"}

_buckets: Table = MetricBucket.__table__  # type: ignore[assignment]
_cases: Table = Case.__table__  # type: ignore[assignment]
_steps: Table = Step.__table__  # type: ignore[assignment]
_procedures: Table = SpecialProcedure.__table__  # type: ignore[assignment]
_completions: Table = Completion.__table__  # type: ignore[assignment]
_payments: Table = Payment.__table__  # type: ignore[assignment]
_evaluations: Table = Evaluation.__table__  # type: ignore[assignment]
_complaints: Table = Complaint.__table__  # type: ignore[assignment]
_alerts: Table = Alert.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class BucketKey:
    """Where a delta lands: the bucket's primary key plus the item attributes the upward report is keyed by."""

    day: date
    department: str
    implementation_code: str
    basic_code: str
    item_type_code: str


Deltas = dict[BucketKey, dict[str, int]]
BucketValues = dict[tuple[date, str, str], dict[str, int]]
_RawKey = tuple[date, str, str, str, str]  # BucketKey's fields: tuples hash much faster on the hot path
_RawDeltas = dict[_RawKey, dict[str, int]]


# -- small database helpers shared by metrics, alerts and the rule engine ------------------------------------------
def day_of(conn: Connection, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """SQL for the calendar day of a naive local datetime column (compare with ``as_date`` results)."""
    if conn.dialect.name == "sqlite":
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


_KEY_COLUMNS = ("day", "department", "implementation_code", "basic_code", "item_type_code")
_UPSERT_SQL: dict[tuple[str, tuple[str, ...]], str] = {}
_DAY_TEXT: dict[date, str] = {}


def _upsert_sql(dialect: str, changed: tuple[str, ...]) -> str:
    """The bucket upsert adding the ``changed`` counters; every other counter is inserted as a literal 0.

    Only the key, the changed counters and the revision are bound: binding all 27 counters of every row cost more
    than the upsert itself on the import hot path.
    """
    cached = _UPSERT_SQL.get((dialect, changed))
    if cached is None:
        table = _buckets.name
        mark = "?" if dialect == "sqlite" else "%s"
        bound = set(changed)
        values = [mark] * len(_KEY_COLUMNS) + [mark if name in bound else "0" for name in COUNTERS] + [mark]
        additions = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in changed)
        cached = (
            f"INSERT INTO {table} ({', '.join((*_KEY_COLUMNS, *COUNTERS, 'revision'))}) VALUES ({', '.join(values)}) "
            f"ON CONFLICT (day, department, implementation_code) DO UPDATE SET {additions}, "
            "revision = excluded.revision"
        )
        _UPSERT_SQL[(dialect, changed)] = cached
    return cached


def _unnest_upsert_sql(changed: tuple[str, ...]) -> str:
    """PostgreSQL: the bucket upsert of a whole batch as ONE statement over arrays (one per bound column)."""
    cached = _UPSERT_SQL.get(("postgresql-unnest", changed))
    if cached is None:
        table = _buckets.name
        bound = set(changed)
        arrays = ["%s::date[]", *["%s::text[]"] * 4, *["%s::bigint[]"] * len(changed)]
        names = ["k_day", "k_department", "k_item", "k_basic", "k_type", *(f"v_{name}" for name in changed)]
        # The revision comes first among the parameters: it is the SELECT list's, before the arrays.
        selected = [*names[:5], *(f"v_{name}" if name in bound else "0" for name in COUNTERS), "%s::bigint"]
        additions = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in changed)
        cached = (
            f"INSERT INTO {table} ({', '.join((*_KEY_COLUMNS, *COUNTERS, 'revision'))}) "
            f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) AS t({', '.join(names)}) "
            f"ON CONFLICT (day, department, implementation_code) DO UPDATE SET {additions}, "
            "revision = excluded.revision"
        )
        _UPSERT_SQL[("postgresql-unnest", changed)] = cached
    return cached


def add_to_buckets(conn: Connection, deltas: Mapping[BucketKey, Mapping[str, int]]) -> int:
    """Add counter deltas to their buckets with one executemany upsert; returns the new metric revision.

    All-zero deltas are skipped (no revision is spent when nothing changes). An unknown counter name is a
    programming error (ValueError), never silently dropped. Rows go to the driver's executemany: this sits on the
    import hot path.
    """
    raw = {
        (key.day, key.department, key.implementation_code, key.basic_code, key.item_type_code): values
        for key, values in deltas.items()
    }
    return _add_raw(conn, raw)


def add_record_deltas(
    conn: Connection,
    kind: str,
    records: Sequence[Mapping[str, Any]],
    cal: WorkCalendar,
    complaint_cases: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[int, int | None]:
    """``add_to_buckets(conn, record_deltas(...))`` without the intermediate BucketKey objects (the import's path).

    Returns (buckets changed, new revision); (0, None) when the records change no counter (nothing is written).
    """
    raw = _record_deltas_raw(kind, records, cal, complaint_cases)
    if not raw:
        return 0, None
    return len(raw), _add_raw(conn, raw)


def _add_raw(conn: Connection, deltas: Mapping[_RawKey, Mapping[str, int]]) -> int:
    """The upsert of ``add_to_buckets``: one statement for the union of the changed counters, one row per bucket.

    A counter another bucket of the batch changes is bound as 0 for this one: adding 0 leaves it as it is, and one
    executemany per batch beats one per distinct combination of counters.
    """
    union: set[str] = set()
    entries: list[tuple[_RawKey, Mapping[str, int]]] = []
    for key, values in deltas.items():
        nonzero = False
        for name, value in values.items():
            if name not in _COUNTER_INDEX:
                raise ValueError(f"unknown metric counter {name!r}; known: {', '.join(COUNTERS)}")
            if value:
                nonzero = True
                union.add(name)
        if nonzero:
            entries.append((key, values))
    if not entries:
        return current_revision(conn)
    revision = next_revision(conn)
    dialect = conn.dialect.name
    changed = tuple(name for name in COUNTERS if name in union)
    as_text = dialect == "sqlite"  # SQLAlchemy stores a Date as 'YYYY-MM-DD' text on SQLite
    day_text = _DAY_TEXT
    rows: list[tuple[Any, ...]] = []
    for (day, department, implementation_code, basic_code, item_type_code), values in entries:
        if as_text:
            shown = day_text.get(day)
            if shown is None:
                shown = day_text[day] = day.isoformat()
        get = values.get
        rows.append(
            (
                shown if as_text else day,
                department,
                implementation_code,
                basic_code,
                item_type_code,
                *[int(get(name) or 0) for name in changed],
                revision,
            )
        )
    # In key order: the upserts then walk the primary-key index forward instead of jumping around it.
    rows.sort()
    if dialect == "postgresql":
        # One set-based statement over arrays: psycopg's executemany still costs a server round of parse, bind and
        # execute per row, several times the upsert itself.
        columns = list(zip(*rows, strict=True))[:-1]  # the revision is bound once, not per row
        conn.exec_driver_sql(_unnest_upsert_sql(changed), (revision, *(list(column) for column in columns)))
    else:
        conn.exec_driver_sql(_upsert_sql(dialect, changed), rows)
    log.debug("metric revision %s: %s buckets changed", revision, len(rows))
    return revision


def merge_deltas(target: Deltas, more: Mapping[BucketKey, Mapping[str, int]]) -> Deltas:
    """Add ``more`` into ``target`` (in place) and return it."""
    for key, values in more.items():
        bucket = target.setdefault(key, {})
        for name, value in values.items():
            bucket[name] = bucket.get(name, 0) + value
    return target


# -- event definitions: which record increments what -----------------------------------------------------------
def fen(amount: Decimal | float | int | str) -> int:
    """Yuan to fen (分), half-up: the integer unit fees are summed in."""
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _case_key(case_row: Mapping[str, Any], day: date) -> _RawKey:
    return (
        day,
        case_row["department"],
        case_row["implementation_code"],
        case_row.get("basic_code") or "",
        case_row.get("item_type_code") or "",
    )


def _day(value: datetime) -> date:
    return value.date()


def _add(deltas: _RawDeltas, key: _RawKey, name: str, value: int = 1) -> None:
    bucket = deltas.get(key)
    if bucket is None:
        bucket = deltas[key] = {}
    bucket[name] = bucket.get(name, 0) + value


def _bucket(deltas: _RawDeltas, key: _RawKey) -> dict[str, int]:
    bucket = deltas.get(key)
    if bucket is None:
        bucket = deltas[key] = {}
    return bucket


def _completion_deltas(
    records: Sequence[Mapping[str, Any]], cal: WorkCalendar, deltas: _RawDeltas, *, sign: int = 1, cohort: bool = True
) -> None:
    """Completion counters: the write-time side of the definitions recompute_buckets derives in SQL.

    early = completed on a day before the promised due day (is_early); on time = completed_at <= promised_due_at;
    within legal = completed_at <= legal_due_at; processing working days = workdays_used; refused = result 2 or 3.
    ``sign`` -1 takes a completion's counters back out (a re-timed completed case, see procedure_end); ``cohort``
    closes the case's open_cases gauge.
    """
    used_memo: dict[tuple[date, date, int], int] = {}  # a batch repeats the same (accepted, completed, stops) days
    # The hot path of a completion import: _case_key and _bucket inlined.
    for record in records:
        case_row = record["case"]
        completed_at: datetime = record["completed_at"]
        accepted_at: datetime = case_row["accepted_at"]
        promised: datetime = case_row["promised_due_at"]
        completed_day = completed_at.date()
        # The importer already counted it (and rejected a completion the calendar cannot count).
        used = record.get("workdays_used")
        if used is None:
            stops = int(case_row.get("clock_stop_workdays") or 0)
            memo_key = (accepted_at.date(), completed_day, stops)
            used = used_memo.get(memo_key)
            if used is None:
                used = used_memo[memo_key] = workdays_used(cal, accepted_at, completed_at, stops)
        department = case_row["department"]
        item = case_row["implementation_code"]
        basic = case_row.get("basic_code") or ""
        item_type = case_row.get("item_type_code") or ""
        key = (completed_day, department, item, basic, item_type)
        bucket = deltas.get(key)
        if bucket is None:
            bucket = deltas[key] = {}
        bucket["completed"] = bucket.get("completed", 0) + sign
        if is_early(completed_at, promised):
            bucket["completed_early"] = bucket.get("completed_early", 0) + sign
        if completed_at <= promised:
            bucket["completed_on_time"] = bucket.get("completed_on_time", 0) + sign
        if completed_at <= case_row["legal_due_at"]:
            bucket["completed_within_legal"] = bucket.get("completed_within_legal", 0) + sign
        if used:
            bucket["processing_workdays"] = bucket.get("processing_workdays", 0) + sign * used
        if (record.get("result_code") or "") in REFUSED_RESULT_CODES:
            bucket["refused"] = bucket.get("refused", 0) + sign
        if cohort:
            key = (accepted_at.date(), department, item, basic, item_type)
            opened = deltas.get(key)
            if opened is None:
                opened = deltas[key] = {}
            opened["open_cases"] = opened.get("open_cases", 0) - 1


def record_deltas(
    kind: str,
    records: Sequence[Mapping[str, Any]],
    cal: WorkCalendar,
    complaint_cases: Mapping[str, Mapping[str, Any]] | None = None,
) -> Deltas:
    """Counter deltas of newly stored records of one kind (see the table above).

    ``records`` follow the ingest listener contract: validated row dicts, with ``"case"`` for case-linked kinds.
    ``complaint_cases`` maps a complaint's case_no to its case row (implementation/basic/type codes).
    """
    return {BucketKey(*key): values for key, values in _record_deltas_raw(kind, records, cal, complaint_cases).items()}


def _record_deltas_raw(
    kind: str,
    records: Sequence[Mapping[str, Any]],
    cal: WorkCalendar,
    complaint_cases: Mapping[str, Mapping[str, Any]] | None = None,
) -> _RawDeltas:
    """``record_deltas`` keyed by plain tuples (hash and build much faster on the import hot path)."""
    deltas: _RawDeltas = {}
    if kind == "acceptance":
        for record in records:
            case_row = record.get("case") or record
            bucket = _bucket(deltas, _case_key(case_row, case_row["accepted_at"].date()))
            bucket["received"] = bucket.get("received", 0) + 1
            bucket["open_cases"] = bucket.get("open_cases", 0) + 1
    elif kind == "step":
        for record in records:
            action = record.get("action")
            name = "returned" if action == "return" else "supplements" if action == "supplement" else None
            if name is not None:
                _add(deltas, _case_key(record["case"], _day(record["started_at"])), name)
    elif kind == "procedure_end":
        for record in records:
            procedure = record.get("procedure") or record
            case_row = record["case"]
            key = _case_key(case_row, _day(record["ended_at"]))
            _add(deltas, key, "clock_stops")
            _add(deltas, key, "clock_stop_workdays", int(procedure.get("workdays") or 0))
            previous = record.get("previous_case")
            if case_row.get("status") == "completed" and case_row.get("completed_at") and previous:
                # A procedure closed after the case completed re-times it (deadlines, clock-stop days): its
                # completion counters move from the old timing to the new one, as recompute_buckets sees them.
                done = {"completed_at": case_row["completed_at"], "result_code": ""}
                before = {**done, "case": {**case_row, **previous}}
                _completion_deltas([before], cal, deltas, sign=-1, cohort=False)
                _completion_deltas([{**done, "case": case_row}], cal, deltas, cohort=False)
    elif kind == "completion":
        _completion_deltas(records, cal, deltas)
    elif kind == "payment":
        for record in records:
            key = _case_key(record["case"], _day(record["paid_at"]))
            _add(deltas, key, "fees_count")
            _add(deltas, key, "fees_fen", fen(record["amount"]))
    elif kind == "evaluation":
        for record in records:
            code = int(record["satisfaction_code"])
            _add(deltas, _case_key(record["case"], _day(record["evaluated_at"])), f"ratings_{code}")
    elif kind == "complaint":
        linked = complaint_cases or {}
        for record in records:
            case_row = linked.get(record.get("case_no") or "")
            key = (
                _day(record["received_at"]),
                record["respondent_unit"],
                case_row["implementation_code"] if case_row else "",
                (case_row.get("basic_code") or "") if case_row else "",
                (case_row.get("item_type_code") or "") if case_row else "",
            )
            _add(deltas, key, "complaints_received")
    return deltas


# -- recomputation from the raw records --------------------------------------------------------------------------
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


def recompute_buckets(conn: Connection, cal: WorkCalendar) -> dict[tuple[date, str, str], dict[str, int]]:
    """Every bucket's counters derived from the raw records alone, keyed (day, department, implementation_code).

    Only non-zero counters are present. Grouping is done in SQL; only the working-day count of completions
    needs the calendar, once per distinct (accepted day, completed day, clock-stop days).
    """
    result: BucketValues = {}
    days = _Days()
    c = _cases.c

    # received, open_cases: per acceptance day.
    accepted_day = day_of(conn, c.accepted_at).label("day")
    open_flag = case((c.status == "open", 1), else_=0)
    rows = conn.execute(
        select(
            accepted_day, c.department, c.implementation_code, func.count().label("n"), func.sum(open_flag).label("o")
        ).group_by(accepted_day, c.department, c.implementation_code)
    )
    _accumulate(result, rows, lambda r: (("received", r.n), ("open_cases", r.o)), days)

    # completions: per completion day; the working days used need the calendar.
    done = _completions.c
    completed_day = day_of(conn, done.completed_at).label("day")
    accepted = day_of(conn, c.accepted_at).label("accepted_day")
    early = case((day_of(conn, done.completed_at) < day_of(conn, c.promised_due_at), 1), else_=0).label("early")
    on_time = case((done.completed_at <= c.promised_due_at, 1), else_=0).label("on_time")
    legal = case((done.completed_at <= c.legal_due_at, 1), else_=0).label("legal")
    refused = case((done.result_code.in_(sorted(REFUSED_RESULT_CODES)), 1), else_=0).label("refused")
    # (day, department, implementation_code) first: _accumulate reads the bucket key by position.
    group: tuple[ColumnElement[Any], ...] = (completed_day, c.department, c.implementation_code, accepted)
    group += (c.clock_stop_workdays, early, on_time, legal, refused)
    rows = conn.execute(
        select(*group, func.count().label("n"))
        .select_from(_completions.join(_cases, c.case_no == done.case_no))
        .group_by(*group)
    )

    @lru_cache(maxsize=65536)
    def used(accepted_on: date, completed_on: date, stops: int) -> int:
        return workdays_used(cal, datetime.combine(accepted_on, time()), datetime.combine(completed_on, time()), stops)

    def completion_counters(r: Any) -> Iterable[tuple[str, int]]:
        n = int(r.n)
        return (
            ("completed", n),
            ("completed_early", n * r.early),
            ("completed_on_time", n * r.on_time),
            ("completed_within_legal", n * r.legal),
            ("processing_workdays", n * used(days(r.accepted_day), days(r.day), int(r.clock_stop_workdays))),
            ("refused", n * r.refused),
        )

    _accumulate(result, rows, completion_counters, days)

    # returned / supplements: per step start day.
    s = _steps.c
    step_day = day_of(conn, s.started_at).label("day")
    rows = conn.execute(
        select(step_day, c.department, c.implementation_code, s.action, func.count().label("n"))
        .select_from(_steps.join(_cases, c.case_no == s.case_no))
        .where(s.action.in_(["return", "supplement"]))
        .group_by(step_day, c.department, c.implementation_code, s.action)
    )
    _accumulate(result, rows, lambda r: ((("returned" if r.action == "return" else "supplements"), r.n),), days)

    # clock stops: per procedure end day.
    p = _procedures.c
    end_day = day_of(conn, p.ended_at).label("day")
    rows = conn.execute(
        select(end_day, c.department, c.implementation_code, func.count().label("n"), func.sum(p.workdays).label("w"))
        .select_from(_procedures.join(_cases, c.case_no == p.case_no))
        .where(p.ended_at.is_not(None))
        .group_by(end_day, c.department, c.implementation_code)
    )
    _accumulate(result, rows, lambda r: (("clock_stops", r.n), ("clock_stop_workdays", r.w)), days)

    # fees: per payment day; each amount is converted to fen exactly as at write time.
    pay = _payments.c
    paid_day = day_of(conn, pay.paid_at).label("day")
    rows = conn.execute(
        select(paid_day, c.department, c.implementation_code, pay.amount).select_from(
            _payments.join(_cases, c.case_no == pay.case_no)
        )
    )
    _accumulate(result, rows, lambda r: (("fees_count", 1), ("fees_fen", fen(r.amount))), days)

    # ratings: per evaluation day.
    ev = _evaluations.c
    evaluated_day = day_of(conn, ev.evaluated_at).label("day")
    rows = conn.execute(
        select(evaluated_day, c.department, c.implementation_code, ev.satisfaction_code, func.count().label("n"))
        .select_from(_evaluations.join(_cases, c.case_no == ev.case_no))
        .group_by(evaluated_day, c.department, c.implementation_code, ev.satisfaction_code)
    )
    _accumulate(result, rows, lambda r: ((f"ratings_{int(r.satisfaction_code)}", r.n),), days)

    # complaints: received per received day, concluded per concluded day; respondent unit, linked case's item.
    cp = _complaints.c
    linked_item = func.coalesce(c.implementation_code, literal("")).label("implementation_code")
    complaint_join = _complaints.outerjoin(_cases, c.case_no == cp.case_no)
    received_day = day_of(conn, cp.received_at).label("day")
    rows = conn.execute(
        select(received_day, cp.respondent_unit.label("department"), linked_item, func.count().label("n"))
        .select_from(complaint_join)
        .group_by(received_day, cp.respondent_unit, linked_item)
    )
    _accumulate(result, rows, lambda r: (("complaints_received", r.n),), days)
    concluded_day = day_of(conn, cp.concluded_at).label("day")
    substantiated = case((cp.finding == "substantiated", 1), else_=0)
    rows = conn.execute(
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
    _accumulate(result, rows, lambda r: (("complaints_concluded", r.n), ("complaints_substantiated", r.s)), days)

    # alerts: per raised day and severity.
    a = _alerts.c
    raised_day = day_of(conn, a.raised_at).label("day")
    rows = conn.execute(
        select(raised_day, a.department, a.implementation_code, a.severity, func.count().label("n")).group_by(
            raised_day, a.department, a.implementation_code, a.severity
        )
    )
    _accumulate(result, rows, lambda r: ((SEVERITY_COUNTERS.get(r.severity, "reminders"), r.n),), days)

    # open-overdue gauges: open cases holding an R02 / R03 alert, on their acceptance day.
    for rule_id, gauge in OVERDUE_GAUGE_RULES.items():
        holders = select(a.case_no).where(a.rule_id == rule_id, a.case_no.is_not(None))
        rows = conn.execute(
            select(accepted_day, c.department, c.implementation_code, func.count().label("n"))
            .where(c.status == "open", c.case_no.in_(holders))
            .group_by(accepted_day, c.department, c.implementation_code)
        )
        _accumulate(result, rows, lambda r, gauge=gauge: ((gauge, r.n),), days)  # type: ignore[misc]

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


# -- derived rates and grouped statistics ------------------------------------------------------------------------
def _sum(*names: str) -> Callable[[Mapping[str, int]], int]:
    return lambda counters: sum(int(counters.get(name, 0)) for name in names)


def _difference(minuend: str, subtrahend: str) -> Callable[[Mapping[str, int]], int]:
    return lambda counters: int(counters.get(minuend, 0)) - int(counters.get(subtrahend, 0))


# Each derived rate: (numerator, denominator), both functions of SUMMED counters; never an average of averages.
RATE_DEFINITIONS: dict[str, tuple[Callable[[Mapping[str, int]], int], Callable[[Mapping[str, int]], int]]] = {
    "early_rate": (_sum("completed_early"), _sum("completed")),
    "on_time_rate": (_sum("completed_on_time"), _sum("completed")),
    "overdue_rate": (_difference("completed", "completed_on_time"), _sum("completed")),
    "legal_overdue_rate": (_difference("completed", "completed_within_legal"), _sum("completed")),
    "return_rate": (_sum("returned"), _sum("received")),
    "satisfaction_rate": (
        _sum("ratings_1", "ratings_2", "ratings_3"),
        _sum("ratings_1", "ratings_2", "ratings_3", "ratings_4", "ratings_5"),
    ),
    "complaint_closure_rate": (_sum("complaints_concluded"), _sum("complaints_received")),
    "avg_processing_workdays": (_sum("processing_workdays"), _sum("completed")),
}


def derived_rates(counters: Mapping[str, int]) -> dict[str, float | None]:
    """Rates from summed counters (None when the denominator is 0); the one definition every view uses.

    early_rate = completed_early / completed; on_time_rate = completed_on_time / completed;
    overdue_rate = (completed − completed_on_time) / completed; legal_overdue_rate = (completed −
    completed_within_legal) / completed; return_rate = returned / received; satisfaction_rate = ratings 1–3 /
    all ratings; complaint_closure_rate = complaints_concluded / complaints_received;
    avg_processing_workdays = processing_workdays / completed.
    """
    rates: dict[str, float | None] = {}
    for name, (numerator, denominator) in RATE_DEFINITIONS.items():
        below = denominator(counters)
        rates[name] = None if below == 0 else numerator(counters) / below
    return rates


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
