"""Metric buckets kept at write time: record deltas (``record_deltas``) added to buckets (``add_to_buckets``).

Each write happens under the next metric revision, on the import hot path.

What each counter counts, on which day and for whom: docs/metrics.md (the one place). Names and derived rates:
metric_definitions; the recompute and ``supnet metrics check``: metric_queries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table

from node.domain import is_early, workdays_used
from node.store import MetricBucket, copy_to_staging, current_revision, next_revision
from node.supervision.metric_definitions import ACCEPTED_COMPLAINT_STATUSES, COUNTERS, REFUSED_RESULT_CODES, fen

if TYPE_CHECKING:
    from node.domain import WorkCalendar

__all__ = [
    "BucketKey",
    "Deltas",
    "add_record_deltas",
    "add_to_buckets",
    "complaint_relink_deltas",
    "merge_deltas",
    "record_deltas",
]

log = logging.getLogger(__name__)

_COUNTER_INDEX = {name: index for index, name in enumerate(COUNTERS)}

_buckets: Table = MetricBucket.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class BucketKey:
    """Where a delta lands: the bucket's primary key plus the item attributes the upward report is keyed by."""

    day: date
    department: str
    implementation_code: str
    basic_code: str
    item_type_code: str


Deltas = dict[BucketKey, dict[str, int]]
_RawKey = tuple[date, str, str, str, str]  # BucketKey's fields: tuples hash much faster on the hot path
_RawDeltas = dict[_RawKey, dict[str, int]]

# -- adding deltas to the buckets -----------------------------------------------------------------------------------
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


_STAGING = "supnet_bucket_deltas"
_STAGING_DEFINITION = (
    "day date, department text, implementation_code text, basic_code text, item_type_code text, "
    + ", ".join(f"{name} bigint NOT NULL DEFAULT 0" for name in COUNTERS)
)


def _staged_upsert_sql(staging: str, changed: tuple[str, ...]) -> str:
    """PostgreSQL: the bucket upsert of a whole batch as ONE statement over the COPY'd staging table.

    The staging table holds every counter (those not COPY'd are 0), so the SELECT list is the same for any
    ``changed``; only the additions on conflict name the changed ones. The revision is the one parameter.
    """
    cached = _UPSERT_SQL.get((staging, changed))
    if cached is None:
        table = _buckets.name
        additions = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in changed)
        columns = ", ".join((*_KEY_COLUMNS, *COUNTERS))
        cached = (
            f"INSERT INTO {table} ({columns}, revision) SELECT {columns}, %s FROM {staging} "
            f"ON CONFLICT (day, department, implementation_code) DO UPDATE SET {additions}, "
            "revision = excluded.revision"
        )
        _UPSERT_SQL[(staging, changed)] = cached
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
        # COPY into a staging table, then one set-based upsert (node.store.bulk): psycopg's executemany costs a
        # server round of parse, bind and execute per row, and binding the columns as arrays cost more in psycopg's
        # array dumper than the upsert itself. The revision is bound once, not per row.
        staging = copy_to_staging(
            conn, _STAGING, _STAGING_DEFINITION, (*_KEY_COLUMNS, *changed), (row[:-1] for row in rows)
        )
        conn.exec_driver_sql(_staged_upsert_sql(staging, changed), (revision,))
    else:
        conn.exec_driver_sql(_upsert_sql(dialect, changed), rows)
    log.debug("metric revision %s: %s buckets changed", revision, len(rows))
    return revision


def complaint_relink_deltas(complaints: Sequence[Mapping[str, Any]], cases: Mapping[str, Mapping[str, Any]]) -> Deltas:
    """Move the counters of complaints stored before their case from item "" to the case's item.

    A complaint's counters belong to its linked case's item (docs/metrics.md); one stored before the case was known
    went to item "". When the case arrives, every counter the complaint holds moves over, so the buckets equal what
    the records say whatever the import order.
    """
    deltas: Deltas = {}
    for complaint in complaints:
        case_row = cases[str(complaint["case_no"])]
        moved: list[tuple[datetime, str]] = [(complaint["received_at"], "complaints_received")]
        if complaint["status"] in ACCEPTED_COMPLAINT_STATUSES and complaint["decided_at"] is not None:
            moved.append((complaint["decided_at"], "complaints_accepted"))
        if complaint["status"] == "concluded" and complaint["concluded_at"] is not None:
            moved.append((complaint["concluded_at"], "complaints_concluded"))
            if complaint["finding"] == "substantiated":
                moved.append((complaint["concluded_at"], "complaints_substantiated"))
        for moment, counter in moved:
            unit = complaint["respondent_unit"]
            was = BucketKey(_day(moment), unit, "", "", "")
            now = BucketKey(
                _day(moment),
                unit,
                case_row["implementation_code"],
                case_row.get("basic_code") or "",
                case_row.get("item_type_code") or "",
            )
            merge_deltas(deltas, {was: {counter: -1}, now: {counter: 1}})
    return deltas


def merge_deltas(target: Deltas, more: Mapping[BucketKey, Mapping[str, int]]) -> Deltas:
    """Add ``more`` into ``target`` (in place) and return it."""
    for key, values in more.items():
        bucket = target.setdefault(key, {})
        for name, value in values.items():
            bucket[name] = bucket.get(name, 0) + value
    return target


# -- which record increments what -----------------------------------------------------------------------------------
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
        if cohort:  # a completion record arrived (not a re-timing of one already counted)
            bucket["records_reported"] = bucket.get("records_reported", 0) + 1
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
            bucket["records_reported"] = bucket.get("records_reported", 0) + 1
    elif kind == "step":
        for record in records:
            case_row = record["case"]
            key = _case_key(case_row, _day(record["started_at"]))
            _add(deltas, key, "records_reported")
            action = record.get("action")
            name = "return_steps" if action == "return" else "supplements" if action == "supplement" else None
            if name is None:
                continue
            _add(deltas, key, name)
            # The case as it is AFTER this step: its first return makes it a returned case, once.
            if name == "return_steps" and int(case_row.get("return_count") or 0) == 1:
                _add(deltas, _case_key(case_row, _day(case_row["accepted_at"])), "cases_returned")
    elif kind == "procedure_end":
        for record in records:
            procedure = record.get("procedure") or record
            case_row = record["case"]
            key = _case_key(case_row, _day(record["ended_at"]))
            _add(deltas, key, "records_reported")
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
    elif kind == "procedure_start":
        for record in records:
            _add(deltas, _case_key(record["case"], _day(record["started_at"])), "records_reported")
    elif kind == "completion":
        _completion_deltas(records, cal, deltas)
    elif kind == "payment":
        for record in records:
            key = _case_key(record["case"], _day(record["paid_at"]))
            _add(deltas, key, "records_reported")
            _add(deltas, key, "fees_count")
            _add(deltas, key, "fees_fen", fen(record["amount"]))
    elif kind == "evaluation":
        for record in records:
            code = int(record["satisfaction_code"])
            key = _case_key(record["case"], _day(record["evaluated_at"]))
            _add(deltas, key, "records_reported")
            _add(deltas, key, f"ratings_{code}")
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
            decided_at = record.get("decided_at")
            if record.get("status") in ACCEPTED_COMPLAINT_STATUSES and decided_at is not None:
                # Stored already accepted: counted on the decision day, as the accept transition does.
                _add(deltas, (_day(decided_at), *key[1:]), "complaints_accepted")
    return deltas
