"""The import API: validated records land in batches, idempotently, with their effects on cases.

``Importer(node).import_files(paths)`` (the CLI) and ``Importer(node).import_records(records)`` (gRPC ingest) share
one pipeline:

1. each record is validated on its own (node.ingest.validate); a bad one becomes a RecordError, the rest go on;
2. a batch (config ``store.batch_size``) is written in ONE transaction, kind by kind in dependency order (items,
   cases, special procedures, steps, payments, completions, evaluations, complaints): a batch commits whole or not
   at all, so what the summary counts as accepted is durable;
3. each kind has a natural key: a known key with the same content is a duplicate (no change), with other content a
   conflict naming the differing fields; nothing is ever overwritten;
4. case effects (status, counters, clock stops, recomputed deadlines) are applied in the same transaction, and
   listeners (metrics, rules) see the new records before the commit;
5. whatever a listener needs the calendar for is checked here first, per record: a completion whose working days
   cannot be counted (a year without holiday data) is rejected with its file, line and field, never the batch.
   Steps get their own due (``step_due_at``, from 环节时限) for the step-overdue rule.

Speed: items are preloaded into a dict, due dates and working days used are memoised per day, existence checks are
one query per batch, rows go in through the driver's executemany (SQLite, values pre-formatted in SQLAlchemy's own
DATETIME storage format so the ORM reads them back) or COPY (PostgreSQL), and the cyclic garbage collector is paused
while a batch is processed (it only re-scanned the batch's short-lived rows).
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, DateTime, Engine, Numeric, Table, and_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from node.domain import due_at, procedure_workdays, workdays_used
from node.errors import CalendarError, StoreError
from node.ingest.fields import KIND_ORDER, RECORD_FIELDS
from node.ingest.listeners import CASE_FIELDS, IngestListener
from node.ingest.readers import FileReader, RawRecord, kind_from_alias, open_files
from node.ingest.validate import (
    BEFORE_ACCEPTANCE,
    CALENDAR,
    CONFLICT,
    INCONSISTENT,
    INVALID_STATE,
    KIND_TABLES,
    NATURAL_KEYS,
    UNKNOWN_CASE,
    UNKNOWN_ITEM,
    UNKNOWN_KIND,
    RecordError,
    RecordInvalid,
    Validator,
    canonical_field,
    field_label,
    problem_message,
    record_key,
)
from node.store import Base

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

log = logging.getLogger(__name__)

Status = Literal["accepted", "duplicate", "rejected"]
ProgressCallback = Callable[[int, int], None]
Row = dict[str, Any]
Pending = tuple[int, Row]  # (line, validated row)
Tagged = tuple[int, str, Row]  # (line, kind, validated row)

_MAX_ATTEMPTS = 5
# Items x acceptance days x instant flag: bounded so a long-lived importer (gRPC ingest) does not grow forever.
_DEADLINE_CACHE_SIZE = 200_000
_RETRY_PAUSE_SECONDS = 0.2
# Processing phases of a batch: dependencies first. Special procedures start and end in one phase, in input order,
# because an end closes whichever procedure is open at that moment.
_PHASES: tuple[tuple[str, ...], ...] = (
    ("item",),
    ("acceptance",),
    ("procedure_start", "procedure_end"),
    ("step",),
    ("payment",),
    ("completion",),
    ("evaluation",),
    ("complaint",),
)
_PHASE_OF: dict[str, int] = {kind: index for index, kinds in enumerate(_PHASES) for kind in kinds}
assert set(_PHASE_OF) == set(KIND_ORDER)

_CASE_READ_COLUMNS: tuple[str, ...] = (*CASE_FIELDS, "clock_stopped")
_CASE_CHECK_COLUMNS: tuple[str, ...] = (
    "case_no",
    "accepted_at",
    "status",
    "clock_stopped",
    "supplement_count",
    "return_count",
)
_ITEM_COLUMNS = (
    "implementation_code",
    "basic_code",
    "type_code",
    "promised_limit",
    "promised_limit_unit",
    "legal_limit",
    "legal_limit_unit",
)


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What became of one record: accepted, duplicate (already stored, no change) or rejected (with the error)."""

    source: str
    line: int
    kind: str
    key: str | None
    status: Status
    error: RecordError | None = None


OutcomeCallback = Callable[[RecordOutcome], None]


@dataclass
class ImportSummary:
    """Totals of one import: accepted, duplicates, rejected (by reason and kind), the errors and any warnings."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)
    errors_omitted: int = 0
    warnings: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        """Records seen in total."""
        return self.accepted + self.duplicates + self.rejected

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: accepted, duplicates, rejected, errors, plus breakdowns."""
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": [error.to_dict() for error in self.errors],
            "errors_omitted": self.errors_omitted,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "by_kind": {kind: dict(counts) for kind, counts in self.by_kind.items()},
            "warnings": list(self.warnings),
            "files": list(self.files),
            "seconds": round(self.seconds, 3),
        }


# -- database back ends ------------------------------------------------------------------------------------------
_CLOCK_TIMES = [f"{h:02d}:{m:02d}:{s:02d}.000000" for h in range(24) for m in range(60) for s in range(60)]
_DAY_PREFIXES: dict[int, str] = {}
_FORMATTED: dict[datetime, str] = {}
_FORMATTED_SIZE = 50_000


def sqlite_datetime(value: datetime | None) -> str | None:
    """A naive datetime in SQLAlchemy's SQLite DATETIME storage format, 'YYYY-MM-DD HH:MM:SS.ffffff'.

    Exactly sqlalchemy.dialects.sqlite.DATETIME's format, so ORM reads and SQL comparisons of bound values agree.
    Built from cached day and second-of-day strings: ``isoformat`` costs 1-2 µs here, on every date-time column of
    every imported row.
    """
    if value is None:
        return None
    # Deadlines and the import time repeat across rows: an exact hit is cheapest.
    text = _FORMATTED.get(value)
    if text is not None:
        return text
    if value.microsecond:
        text = value.isoformat(" ", "microseconds")
    else:
        ordinal = value.toordinal()
        prefix = _DAY_PREFIXES.get(ordinal)
        if prefix is None:
            prefix = _DAY_PREFIXES[ordinal] = value.date().isoformat() + " "
        text = prefix + _CLOCK_TIMES[value.hour * 3600 + value.minute * 60 + value.second]
    if len(_FORMATTED) >= _FORMATTED_SIZE:
        _FORMATTED.clear()
    _FORMATTED[value] = text
    return text


def _to_float(value: Decimal | None) -> float | None:
    # sqlite3 cannot bind Decimal; SQLAlchemy's Numeric binds a float on SQLite as well.
    return None if value is None else float(value)


class _Backend:
    """The driver-level bulk paths of one database dialect."""

    placeholder = "?"
    # Per column type, the function that turns a Python value into what this driver binds (None: as is).
    datetime_binder: Callable[[datetime | None], Any] | None = None
    numeric_binder: Callable[[Decimal | None], Any] | None = None
    # A lookup of already converted datetimes (a C dict.get), tried before datetime_binder.
    known_datetime: Callable[[datetime], Any] = staticmethod(lambda _value: None)

    def __init__(self) -> None:
        self._plans: dict[tuple[str, bool], tuple[str, Callable[[Row], tuple[Any, ...]]]] = {}

    def dt_param(self, value: datetime | None) -> Any:
        """A datetime as this driver binds it for our DateTime columns."""
        return value if self.datetime_binder is None else self.datetime_binder(value)

    def dt_result(self, value: Any) -> datetime | None:
        """A DateTime column value as the driver returns it, as a datetime."""
        return value  # type: ignore[no-any-return]

    def insert_plan(self, table: Table, *, complete: bool = False) -> tuple[str, Callable[[Row], tuple[Any, ...]]]:
        """The column list (all but autoincrement ids) and a generated row -> bind tuple converter.

        Generated straight-line code, because a per-column loop in Python costs more than the insert itself;
        a column missing from a row takes its model default.
        """
        plan_key = (table.name, complete)
        plan = self._plans.get(plan_key)
        if plan is None:
            namespace: dict[str, Any] = {
                "DT": self.datetime_binder,
                "NUM": self.numeric_binder,
                "KNOWN": self.known_datetime,
            }
            columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True)]
            parts = []
            for index, column in enumerate(columns):
                default = column.default
                scalar = default is not None and getattr(default, "is_scalar", False)
                namespace[f"D{index}"] = default.arg if scalar else None  # type: ignore[union-attr]
                value = f"r[{column.name!r}]" if complete else f"r.get({column.name!r}, D{index})"
                if isinstance(column.type, DateTime) and self.datetime_binder is not None:
                    value = f"((KNOWN(v) or DT(v)) if (v := {value}) is not None else None)"
                elif isinstance(column.type, Numeric) and self.numeric_binder is not None:
                    value = f"NUM({value})"
                parts.append(value)
            source = f"def convert(r):\n    return ({', '.join(parts)},)\n"
            exec(source, namespace)  # noqa: S102 - generated from our own table metadata only
            plan = (",".join(c.name for c in columns), namespace["convert"])
            self._plans[plan_key] = plan
        return plan

    def convert_rows(self, table: Table, rows: Sequence[Row]) -> tuple[str, list[tuple[Any, ...]]]:
        """The column list and bind tuples of ``rows`` (all of one kind, so all with the same keys)."""
        columns = [c.name for c in table.columns if not (c.primary_key and c.autoincrement is True)]
        first = rows[0]
        complete = all(name in first for name in columns)
        names, convert = self.insert_plan(table, complete=complete)
        return names, [convert(row) for row in rows]

    def insert(self, conn: Connection, table: Table, rows: Sequence[Row]) -> None:
        """Insert rows (missing columns take their model default)."""
        raise NotImplementedError

    def update_cases(
        self, conn: Connection, assignments: str, columns: Sequence[tuple[str, str]], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """UPDATE cases by case_no for many rows: ``assignments`` names values as {column}; rows end with case_no.

        ``columns`` are (name, SQL type) of the values before case_no. Both databases run it as an executemany of
        keyed UPDATEs (psycopg pipelines them): a set-based UPDATE ... FROM unnest(arrays) measured no faster, and
        PostgreSQL planned it as a hash join over a sequential scan of all cases, which grows with the table.
        """
        if not rows:
            return
        marks = {name: "?" for name, _ in columns}
        self.execute_many(conn, f"UPDATE cases SET {assignments.format(**marks)} WHERE case_no = ?", rows)

    def execute_many(self, conn: Connection, sql: str, params: Sequence[tuple[Any, ...]]) -> None:
        """Run one statement (written with ? placeholders) for many parameter tuples."""
        if not params:
            return
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql.replace("?", self.placeholder), params)
        finally:
            cursor.close()

    def fetch_by_keys(
        self, conn: Connection, table: str, columns: Sequence[str], key: str, keys: Sequence[Any], *, lock: bool = False
    ) -> list[tuple[Any, ...]]:
        """Rows of ``table`` whose ``key`` column is one of ``keys`` (one query); ``lock`` holds them to the commit."""
        raise NotImplementedError

    def begin_batch(self, conn: Connection) -> None:
        """Start the batch's transaction the way this database needs."""


class _SqliteBackend(_Backend):
    """SQLite: executemany through the sqlite3 cursor, datetimes as SQLAlchemy's storage strings."""

    placeholder = "?"
    datetime_binder = staticmethod(sqlite_datetime)
    numeric_binder = staticmethod(_to_float)
    known_datetime = _FORMATTED.get

    def dt_result(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    def insert(self, conn: Connection, table: Table, rows: Sequence[Row]) -> None:
        if not rows:
            return
        columns, values = self.convert_rows(table, rows)
        marks = ",".join("?" * (columns.count(",") + 1))
        self.execute_many(conn, f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", values)

    def begin_batch(self, conn: Connection) -> None:
        # Take the write lock before the batch's first read: what the batch checks (a case is open, a key is new)
        # then stays true until it commits. sqlite3 would otherwise begin only at the first write, after the reads.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    def fetch_by_keys(
        self, conn: Connection, table: str, columns: Sequence[str], key: str, keys: Sequence[Any], *, lock: bool = False
    ) -> list[tuple[Any, ...]]:
        if not keys:
            return []
        # One bound JSON array instead of thousands of ? marks; SQLite probes the key index per element.
        sql = f"SELECT {','.join(columns)} FROM {table} WHERE {key} IN (SELECT value FROM json_each(?))"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            return list(cursor.execute(sql, (json.dumps(list(keys), ensure_ascii=False),)).fetchall())
        finally:
            cursor.close()


class _PostgresBackend(_Backend):
    """PostgreSQL: COPY for inserts, = ANY(array) for key lookups, psycopg executemany (pipelined) for updates."""

    placeholder = "%s"

    def insert(self, conn: Connection, table: Table, rows: Sequence[Row]) -> None:
        if not rows:
            return
        columns, values = self.convert_rows(table, rows)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
        finally:
            cursor.close()

    def fetch_by_keys(
        self, conn: Connection, table: str, columns: Sequence[str], key: str, keys: Sequence[Any], *, lock: bool = False
    ) -> list[tuple[Any, ...]]:
        if not keys:
            return []
        # FOR UPDATE (in key order, so two writers cannot deadlock) serialises state changes of one case; unique keys
        # catch the rest of the races, and a violated one retries the whole batch.
        order = f" ORDER BY {key} FOR UPDATE" if lock else ""
        sql = f"SELECT {','.join(columns)} FROM {table} WHERE {key} = ANY(%s){order}"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, (list(keys),))
            return list(cursor.fetchall())
        finally:
            cursor.close()


def _backend_for(engine: Engine) -> _Backend:
    if engine.dialect.name == "sqlite":
        return _SqliteBackend()
    if engine.dialect.name == "postgresql":
        return _PostgresBackend()
    raise StoreError(f"import supports SQLite and PostgreSQL, not {engine.dialect.name}")


# -- garbage collection ------------------------------------------------------------------------------------------
class _GcPause:
    """Pause the cyclic garbage collector while batches are processed (nested and concurrent batches share it).

    A batch allocates hundreds of thousands of small dicts and tuples that all live until it commits: the collector
    would run its full passes over them again and again (about a tenth of the import's CPU) and free nothing, since
    they hold no reference cycles; plain reference counting frees them when the batch ends. The previous state is
    restored when the last concurrent batch ends, so a collection then catches up on anything cyclic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._was_enabled:
                    gc.enable()


_gc_paused = _GcPause()


# -- one batch's bookkeeping -------------------------------------------------------------------------------------
@dataclass
class _BatchContext:
    """Everything one attempt at one batch produces; merged into the summary only after the commit."""

    conn: Connection
    source: str
    now: datetime
    want_outcomes: bool
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)
    outcomes: list[RecordOutcome] = field(default_factory=list)
    new_items: dict[str, Row] = field(default_factory=dict)

    def _count(self, kind: str, status: str, amount: int = 1) -> None:
        counter = self.counts.get(kind)
        if counter is None:
            counter = self.counts[kind] = Counter()
        counter[status] += amount

    def accept(self, kind: str, accepted: Sequence[Pending]) -> None:
        self._count(kind, "accepted", len(accepted))
        if self.want_outcomes:
            for line, row in accepted:
                self.outcomes.append(RecordOutcome(self.source, line, kind, record_key(kind, row), "accepted"))

    def duplicate(self, kind: str, line: int, row: Row) -> None:
        self._count(kind, "duplicates")
        if self.want_outcomes:
            self.outcomes.append(RecordOutcome(self.source, line, kind, record_key(kind, row), "duplicate"))

    def reject(
        self,
        kind: str,
        line: int,
        row: Mapping[str, Any],
        *,
        field_name: str | None,
        reason: str,
        detail: str,
        whole_message: bool = False,
    ) -> None:
        message = detail if whole_message else problem_message(field_name, detail, kind)
        self.reject_error(RecordError(self.source, line, kind, field_name, reason, message, record_key(kind, row)))

    def reject_error(self, error: RecordError) -> None:
        self._count(error.kind, "rejected")
        self.errors.append(error)
        if self.want_outcomes:
            self.outcomes.append(RecordOutcome(self.source, error.line, error.kind, error.key, "rejected", error))


def _shown(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(" ")
    return repr(value)


def _calendar_detail(cal: WorkCalendar, accepted_at: datetime, completed_at: datetime, exc: CalendarError) -> str:
    """Why a completion cannot be counted: the first year from acceptance to completion the calendar lacks."""
    covered = set(cal.covered_years())
    missing = [year for year in range(accepted_at.year, completed_at.year + 1) if year not in covered]
    year = missing[0] if missing else completed_at.year
    return (
        f"no working-day calendar for year {year}; add it to the holiday file (calendar.holidays_file in "
        f"supnet.toml) and import this record again ({exc})"
    )


def _differences(new: Mapping[str, Any], old: Mapping[Any, Any], columns: Iterable[str]) -> list[str]:
    """Columns whose values differ (Decimal compares by value: 12.5 == 12.50)."""
    return [name for name in columns if new.get(name) != old.get(name)]


def _item_entry(item: Mapping[Any, Any]) -> Row:
    """What a new case needs from its item: the limits (and a key for deadline memos) and copied codes."""
    entry: Row = {column: item[column] for column in _ITEM_COLUMNS}
    entry["limits_key"] = tuple(
        item[c] for c in ("promised_limit", "promised_limit_unit", "legal_limit", "legal_limit_unit")
    )
    entry["case_fields"] = {"basic_code": item["basic_code"], "item_type_code": item["type_code"]}
    return entry


def _tables() -> dict[str, Table]:
    import node.store.all_models  # noqa: F401 - every table registered

    return dict(Base.metadata.tables)


class Importer:
    """Validates and stores records of every kind; one instance may serve many imports (gRPC ingest keeps one)."""

    def __init__(
        self,
        node: Node,
        *,
        listeners: Sequence[IngestListener] = (),
        batch_size: int | None = None,
        max_errors: int = 10_000,
    ) -> None:
        self.node = node
        self._engine = node.engine
        self._validator = Validator(node.tz)
        self._backend = _backend_for(node.engine)
        self._listeners = tuple(listeners)
        self._case_columns = _CASE_READ_COLUMNS if self._listeners else _CASE_CHECK_COLUMNS
        self._batch_size = batch_size or node.config.store.batch_size
        self._max_errors = max_errors
        self._items: dict[str, Row] | None = None
        self._due_cache: dict[tuple[date, int, str, int], datetime | CalendarError] = {}
        self._deadline_cache: dict[tuple[tuple[Any, ...], date, bool], Row | CalendarError] = {}
        self._used_cache: dict[tuple[date, date, int], int | CalendarError] = {}
        self._case_converters: dict[tuple[str, ...], Callable[[Sequence[Any]], Row]] = {}
        self._tables = _tables()
        self._compare_columns: dict[str, tuple[str, ...]] = {
            kind: tuple(spec.name for spec in specs) for kind, specs in RECORD_FIELDS.items()
        }
        dbapi = node.engine.dialect.loaded_dbapi
        # The bulk paths use the driver's cursor, so its own exception classes arrive unwrapped.
        self._retryable: tuple[type[BaseException], ...] = (
            IntegrityError,
            OperationalError,
            dbapi.IntegrityError,
            dbapi.OperationalError,
        )
        self._database_errors: tuple[type[BaseException], ...] = (DBAPIError, dbapi.Error)
        self._handlers: dict[str, Callable[[_BatchContext, list[Tagged]], None]] = {
            "item": self._store_items,
            "acceptance": self._store_acceptances,
            "procedure_start": self._store_procedures,
            "step": self._store_steps,
            "payment": self._store_payments,
            "completion": self._store_completions,
            "evaluation": self._store_evaluations,
            "complaint": self._store_complaints,
        }

    @property
    def calendar(self) -> WorkCalendar:
        """The node's working-day calendar."""
        return self.node.calendar

    # -- public API --------------------------------------------------------------------------------------------
    def import_records(
        self,
        records: Iterable[tuple[str, int, Mapping[str, Any]]],
        *,
        source: str = "grpc",
        on_outcome: OutcomeCallback | None = None,
    ) -> ImportSummary:
        """Import (kind, line, fields) records; fields may use English or GB/T Chinese names, values text or JSON."""
        summary = ImportSummary()
        started = time.perf_counter()
        self._run(source, self._normalized(source, records), summary, on_outcome, None)
        summary.seconds = time.perf_counter() - started
        return summary

    def import_files(
        self,
        paths: Sequence[Path | str],
        *,
        kind: str | None = None,
        encoding: str = "auto",
        progress: ProgressCallback | None = None,
        on_outcome: OutcomeCallback | None = None,
    ) -> ImportSummary:
        """Import CSV / JSON Lines files (all checked first, taken in KIND_ORDER); progress gets (done, total) bytes."""
        readers = open_files([Path(path) for path in paths], kind=kind, encoding=encoding)
        summary = ImportSummary()
        started = time.perf_counter()
        total = sum(reader.size for reader in readers)
        done_before = 0
        for reader in readers:
            summary.files.append(
                {
                    "path": str(reader.path),
                    "format": reader.format,
                    "encoding": reader.resolved_encoding,
                    "kind": reader.primary_kind,
                }
            )

            def report(current: FileReader = reader, offset: int = done_before) -> None:
                if progress is not None:
                    progress(offset + current.bytes_read, total)

            self._run(str(reader.path), iter(reader), summary, on_outcome, report)
            summary.warnings.extend(reader.warnings)
            done_before += reader.size
            if progress is not None:
                progress(done_before, total)
        summary.seconds = time.perf_counter() - started
        log.info(
            "import of %s file(s): %s accepted, %s duplicates, %s rejected in %.1f s",
            len(readers),
            summary.accepted,
            summary.duplicates,
            summary.rejected,
            summary.seconds,
        )
        return summary

    # -- pipeline ----------------------------------------------------------------------------------------------
    def _normalized(self, source: str, records: Iterable[tuple[str, int, Mapping[str, Any]]]) -> Iterator[RawRecord]:
        for kind_name, line, fields in records:
            kind = kind_from_alias(kind_name)
            if kind is None:
                error = RecordError(
                    source, line, str(kind_name), "kind", UNKNOWN_KIND, f"unknown record kind {kind_name!r}"
                )
                yield str(kind_name), line, error
                continue
            names = self._compare_columns[kind]
            if all(key in names for key in fields):
                yield kind, line, dict(fields)
            else:
                mapped: dict[str, Any] = {}
                for key, value in fields.items():
                    mapped[canonical_field(key) or key] = value
                yield kind, line, mapped

    def _run(
        self,
        source: str,
        records: Iterator[RawRecord],
        summary: ImportSummary,
        on_outcome: OutcomeCallback | None,
        after_batch: Callable[[], None] | None,
    ) -> None:
        batch: list[RawRecord] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self._batch_size:
                self._process(source, batch, summary, on_outcome)
                batch = []
                if after_batch is not None:
                    after_batch()
        if batch:
            self._process(source, batch, summary, on_outcome)
            if after_batch is not None:
                after_batch()

    def _process(
        self, source: str, batch: list[RawRecord], summary: ImportSummary, on_outcome: OutcomeCallback | None
    ) -> None:
        """Validate a batch, then store it in one transaction (retried whole if a concurrent writer collides)."""
        with _gc_paused():
            self._process_batch(source, batch, summary, on_outcome)

    def _process_batch(
        self, source: str, batch: list[RawRecord], summary: ImportSummary, on_outcome: OutcomeCallback | None
    ) -> None:
        early_errors: list[RecordError] = []
        phases: list[list[Tagged]] = [[] for _ in _PHASES]
        validate = self._validator.validate
        for kind, line, fields in batch:
            if isinstance(fields, RecordError):
                early_errors.append(fields)
                continue
            try:
                row = validate(kind, fields)
            except RecordInvalid as invalid:
                early_errors.append(
                    RecordError(
                        source, line, kind, invalid.field, invalid.reason, invalid.message, record_key(kind, fields)
                    )
                )
                continue
            phases[_PHASE_OF[kind]].append((line, kind, row))
        first_line, last_line = batch[0][1], batch[-1][1]
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._engine.begin() as conn:
                    self._backend.begin_batch(conn)
                    context = _BatchContext(conn, source, self.node.now(), on_outcome is not None)
                    for error in early_errors:
                        context.reject_error(error)
                    for index, pending in enumerate(phases):
                        if pending:
                            self._handlers[_PHASES[index][0]](context, pending)
                break
            except self._retryable as exc:
                # Another writer stored one of our keys (or held the SQLite lock) between our check and our write:
                # the whole batch rolled back, so run it again and the re-check sees the other writer's rows.
                cause = getattr(exc, "orig", None) or exc
                if attempt == _MAX_ATTEMPTS:
                    raise StoreError(
                        f"{source} lines {first_line}-{last_line}: batch failed {attempt} times: {cause}"
                    ) from exc
                log.warning(
                    "%s lines %s-%s: batch collided with another writer (%s); retrying",
                    source,
                    first_line,
                    last_line,
                    cause,
                )
                time.sleep(_RETRY_PAUSE_SECONDS * attempt)
            except self._database_errors as exc:
                cause = getattr(exc, "orig", None) or exc
                raise StoreError(f"{source} lines {first_line}-{last_line}: database error: {cause}") from exc
        self._merge(context, summary, on_outcome)

    def _merge(self, context: _BatchContext, summary: ImportSummary, on_outcome: OutcomeCallback | None) -> None:
        if context.new_items and self._items is not None:
            self._items.update(context.new_items)
        for kind, counts in context.counts.items():
            summary.by_kind.setdefault(kind, Counter()).update(counts)
            summary.accepted += counts["accepted"]
            summary.duplicates += counts["duplicates"]
            summary.rejected += counts["rejected"]
        for error in sorted(context.errors, key=lambda e: e.line):
            summary.rejected_by_reason[error.reason] += 1
            if len(summary.errors) < self._max_errors:
                summary.errors.append(error)
            else:
                summary.errors_omitted += 1
        if on_outcome is not None:
            for outcome in sorted(context.outcomes, key=lambda o: o.line):
                on_outcome(outcome)

    # -- shared steps ------------------------------------------------------------------------------------------
    @staticmethod
    def _split_repeats(pending: list[Tagged], kind: str) -> tuple[list[Pending], list[Tagged]]:
        """First occurrences of each key, and the repeats (stored in a later round, once the first has landed)."""
        key_columns = NATURAL_KEYS[kind]
        seen: set[Any] = set()
        firsts: list[Pending] = []
        repeats: list[Tagged] = []
        single = key_columns[0] if len(key_columns) == 1 else None
        for line, record_kind, row in pending:
            key = row[single] if single is not None else tuple(row[c] for c in key_columns)
            if key in seen:
                repeats.append((line, record_kind, row))
            else:
                seen.add(key)
                firsts.append((line, row))
        return firsts, repeats

    def _drop_known(
        self,
        context: _BatchContext,
        kind: str,
        records: list[Pending],
        skip_columns: Callable[[Row], frozenset[str]] | None = None,
    ) -> list[Pending]:
        """Records whose natural key is not stored yet; stored ones are counted duplicate or rejected as conflict."""
        if not records:
            return records
        table = self._tables[KIND_TABLES[kind]]
        key_columns = NATURAL_KEYS[kind]
        first_key = key_columns[0]
        if len(key_columns) == 1:
            found = self._backend.fetch_by_keys(
                context.conn, table.name, (first_key,), first_key, [row[first_key] for _, row in records]
            )
            if not found:
                return records
            known = {value for (value,) in found}
            candidates = [row[first_key] for _, row in records if row[first_key] in known]
        else:
            candidates = list({row[first_key] for _, row in records})
        compare = self._compare_columns[kind]
        stored: dict[Any, Row] = {}
        selected = [table.c[name] for name in dict.fromkeys((*key_columns, *compare))]
        for start in range(0, len(candidates), 5000):
            chunk = candidates[start : start + 5000]
            for found_row in context.conn.execute(select(*selected).where(table.c[first_key].in_(chunk))).mappings():
                key = found_row[first_key] if len(key_columns) == 1 else tuple(found_row[c] for c in key_columns)
                stored[key] = dict(found_row)
        if not stored:
            return records
        fresh: list[Pending] = []
        for line, row in records:
            key = row[first_key] if len(key_columns) == 1 else tuple(row[c] for c in key_columns)
            old = stored.get(key)
            if old is None:
                fresh.append((line, row))
                continue
            skipped = skip_columns(row) if skip_columns is not None else frozenset()
            differing = _differences(row, old, (c for c in compare if c not in skipped))
            if differing:
                self._conflict(context, kind, line, row, old=old, differing=differing)
            else:
                context.duplicate(kind, line, row)
        return fresh

    @staticmethod
    def _conflict(
        context: _BatchContext, kind: str, line: int, row: Row, *, old: Mapping[Any, Any], differing: list[str]
    ) -> None:
        shown = "; ".join(
            f"{field_label(c, kind)}: stored {_shown(old.get(c))}, got {_shown(row.get(c))}" for c in differing[:3]
        )
        more = f" (and {len(differing) - 3} more)" if len(differing) > 3 else ""
        context.reject(
            kind,
            line,
            row,
            field_name=",".join(differing),
            reason=CONFLICT,
            detail=f"conflict: {kind} {record_key(kind, row)} is already stored with different content: {shown}{more}",
            whole_message=True,
        )

    def _notify(self, context: _BatchContext, kind: str, rows: Sequence[Row]) -> None:
        if rows:
            for listener in self._listeners:
                listener.on_records(context.conn, kind, rows, context.now)

    def _fetch_cases(
        self,
        context: _BatchContext,
        case_nos: Iterable[str],
        columns: tuple[str, ...] | None = None,
        *,
        lock: bool = False,
    ) -> dict[str, Row]:
        """Current case rows for the given numbers, as Python values.

        The columns listeners get, or only those the import itself needs when nobody listens: reading and
        converting less is most of a completion's cost.
        """
        columns = columns or self._case_columns
        keys = list(dict.fromkeys(case_nos))
        rows = self._backend.fetch_by_keys(context.conn, "cases", columns, "case_no", keys, lock=lock)
        convert = self._case_converter(columns)
        cases: dict[str, Row] = {}
        for values in rows:
            case = convert(values)
            cases[case["case_no"]] = case
        return cases

    def _case_converter(self, columns: tuple[str, ...]) -> Callable[[Sequence[Any]], Row]:
        """A generated (values -> case dict) function for one column list: datetimes and the flag as Python values.

        Straight-line code, because the per-column loop cost more than the query on every completion.
        """
        convert = self._case_converters.get(columns)
        if convert is None:
            namespace: dict[str, Any] = {"DT": self._backend.dt_result}
            parts = []
            for index, name in enumerate(columns):
                value = f"v[{index}]"
                if name in ("accepted_at", "promised_due_at", "legal_due_at", "completed_at"):
                    value = f"DT({value})"
                elif name == "clock_stopped":
                    value = f"bool({value})"
                parts.append(f"{name!r}: {value}")
            source = f"def convert(v):\n    return {{{', '.join(parts)}}}\n"
            exec(source, namespace)  # noqa: S102 - generated from our own column names only
            convert = self._case_converters[columns] = namespace["convert"]
        return convert

    def _items_for(self, context: _BatchContext, codes: Iterable[str]) -> Mapping[str, Row]:
        """Item limits by implementation code: the cache, this batch's new items, and a re-check of misses."""
        if self._items is None:
            rows = context.conn.execute(select(*(self._tables["items"].c[c] for c in _ITEM_COLUMNS))).mappings()
            self._items = {row["implementation_code"]: _item_entry(row) for row in rows}
        known = self._items | context.new_items if context.new_items else self._items
        missing = [code for code in set(codes) if code not in known]
        if missing:
            # Another process (CLI import beside gRPC ingest) may have added items since the cache was filled.
            for values in self._backend.fetch_by_keys(
                context.conn, "items", _ITEM_COLUMNS, "implementation_code", missing
            ):
                item = _item_entry(dict(zip(_ITEM_COLUMNS, values, strict=True)))
                self._items[values[0]] = item
                known[values[0]] = item
        return known

    def _deadline_fields(self, item: Mapping[str, Any], accepted_at: datetime, instant: bool) -> Row:
        """The item- and deadline-derived columns of a new case, memoised per (item limits, day, instant)."""
        cache_key = (item["limits_key"], accepted_at.date(), instant)
        cached = self._deadline_cache.get(cache_key)
        if cached is None:
            # An instant case (即办件, type 1) is due the day it is accepted, whatever the item's limits.
            promised_limit = 0 if instant else item["promised_limit"]
            legal_limit = 0 if instant else item["legal_limit"]
            try:
                promised_due, legal_due = self._due_dates(item, accepted_at, promised_limit, legal_limit, 0)
                cached = {
                    "promised_limit": promised_limit,
                    "legal_limit": legal_limit,
                    "promised_due_at": promised_due,
                    "legal_due_at": legal_due,
                }
            except CalendarError as exc:
                cached = exc
            if len(self._deadline_cache) > _DEADLINE_CACHE_SIZE:
                self._deadline_cache.clear()
            self._deadline_cache[cache_key] = cached
        if isinstance(cached, CalendarError):
            raise cached
        return cached

    def _due(self, accepted_at: datetime, limit: int, unit: str, stop: int) -> datetime:
        """due_at memoised per (day, limit, unit, stop): it depends only on the acceptance day."""
        cache_key = (accepted_at.date(), limit, unit, stop)
        cached = self._due_cache.get(cache_key)
        if cached is None:
            try:
                cached = due_at(self.calendar, accepted_at, limit, unit, stop)
            except CalendarError as exc:
                cached = exc
            self._due_cache[cache_key] = cached
        if isinstance(cached, CalendarError):
            raise cached
        return cached

    def _workdays_used(self, case: Mapping[str, Any], completed_at: datetime) -> int:
        """workdays_used memoised per (accepted day, completed day, clock-stop days); CalendarError when uncovered."""
        accepted_at: datetime = case["accepted_at"]
        stops = int(case.get("clock_stop_workdays") or 0)
        cache_key = (accepted_at.date(), completed_at.date(), stops)
        cached = self._used_cache.get(cache_key)
        if cached is None:
            try:
                cached = workdays_used(self.calendar, accepted_at, completed_at, stops)
            except CalendarError as exc:
                cached = exc
            if len(self._used_cache) > _DEADLINE_CACHE_SIZE:
                self._used_cache.clear()
            self._used_cache[cache_key] = cached
        if isinstance(cached, CalendarError):
            raise cached
        return cached

    def _due_dates(
        self, item: Mapping[str, Any], accepted_at: datetime, promised_limit: int, legal_limit: int, stop: int
    ) -> tuple[datetime, datetime]:
        promised = self._due(accepted_at, promised_limit, item["promised_limit_unit"], stop)
        legal = self._due(accepted_at, legal_limit, item["legal_limit_unit"], stop)
        return promised, legal

    def _with_known_cases(
        self, context: _BatchContext, kind: str, records: list[Pending]
    ) -> tuple[list[Pending], dict[str, Row]]:
        """The records whose case exists (others rejected 'unknown case'), and those cases."""
        cases = self._fetch_cases(context, (row["case_no"] for _, row in records))
        if len(cases) == len({row["case_no"] for _, row in records}):
            return records, cases
        kept: list[Pending] = []
        for line, row in records:
            if row["case_no"] in cases:
                kept.append((line, row))
            else:
                context.reject(
                    kind,
                    line,
                    row,
                    field_name="case_no",
                    reason=UNKNOWN_CASE,
                    detail=f"unknown case {row['case_no']!r}",
                )
        return kept, cases

    def _again(self, context: _BatchContext, kind: str, repeats: list[Tagged]) -> None:
        if repeats:
            self._handlers[kind](context, repeats)

    # -- per kind ----------------------------------------------------------------------------------------------
    def _store_items(self, context: _BatchContext, pending: list[Tagged]) -> None:
        firsts, repeats = self._split_repeats(pending, "item")
        fresh = self._drop_known(context, "item", firsts)
        rows = [row for _, row in fresh]
        self._backend.insert(context.conn, self._tables["items"], rows)
        for row in rows:
            context.new_items[row["implementation_code"]] = _item_entry(row)
        self._notify(context, "item", rows)
        context.accept("item", fresh)
        self._again(context, "item", repeats)

    def _store_acceptances(self, context: _BatchContext, pending: list[Tagged]) -> None:
        firsts, repeats = self._split_repeats(pending, "acceptance")
        fresh = self._drop_known(context, "acceptance", firsts)
        items = self._items_for(context, (row["implementation_code"] for _, row in fresh))
        accepted: list[Pending] = []
        # Derived columns every new case starts with (the row dict becomes the full cases row).
        initial = {
            "clock_stop_workdays": 0,
            "clock_stopped": False,
            "status": "open",
            "completed_at": None,
            "supplement_count": 0,
            "return_count": 0,
            "recorded_at": context.now,
        }
        deadlines = self._deadline_fields
        # The columns a new case takes from its item, its deadlines and the initial state, merged once per
        # (item, deadline fields): one dict update per row instead of three.
        merged: dict[tuple[int, int], tuple[Row, Row, Row]] = {}  # (item, derived, merged): the pair pins the ids
        for line, row in fresh:
            item = items.get(row["implementation_code"])
            if item is None:
                context.reject(
                    "acceptance",
                    line,
                    row,
                    field_name="implementation_code",
                    reason=UNKNOWN_ITEM,
                    detail=f"unknown item code {row['implementation_code']!r}",
                )
                continue
            try:
                derived = deadlines(item, row["accepted_at"], row["case_type_code"] == "1")
            except CalendarError as exc:
                context.reject(
                    "acceptance",
                    line,
                    row,
                    field_name="accepted_at",
                    reason=CALENDAR,
                    detail=f"cannot compute the deadline: {exc}",
                )
                continue
            entry = merged.get((id(item), id(derived)))
            if entry is None:
                entry = merged[(id(item), id(derived))] = (item, derived, {**item["case_fields"], **derived, **initial})
            row.update(entry[2])
            accepted.append((line, row))
        rows = [row for _, row in accepted]
        self._backend.insert(context.conn, self._tables["cases"], rows)
        self._notify(context, "acceptance", rows)
        context.accept("acceptance", accepted)
        self._again(context, "acceptance", repeats)

    def _store_steps(self, context: _BatchContext, pending: list[Tagged]) -> None:
        firsts, repeats = self._split_repeats(pending, "step")
        # entered_at defaults to the import time; a re-send without it is still the same step.
        fresh = self._drop_known(
            context, "step", firsts, lambda row: frozenset({"entered_at"}) if row["entered_at"] is None else frozenset()
        )
        fresh, cases = self._with_known_cases(context, "step", fresh)
        increments: dict[str, list[int]] = {}
        uncovered: list[str] = []
        for _, row in fresh:
            if row["entered_at"] is None:
                row["entered_at"] = context.now
            step_limit = row["step_limit"]
            row["step_due_at"] = None
            if step_limit is not None:
                # The step's own due (R05 judges finished and pending steps by it); steps count working days.
                try:
                    row["step_due_at"] = self._due(row["started_at"], step_limit, "1", 0)
                except CalendarError as exc:
                    # The step itself is fine; only its limit cannot be judged. Said loudly, never guessed.
                    uncovered.append(f"{row['case_no']}/{row['step_name']}: {exc}")
            action = row["action"]
            case = cases[row["case_no"]]
            if action in ("supplement", "return"):
                case = dict(case)
                counter = "supplement_count" if action == "supplement" else "return_count"
                case[counter] += 1
                cases[row["case_no"]] = case
                pair = increments.setdefault(row["case_no"], [0, 0])
                pair[0 if action == "supplement" else 1] += 1
            row["case"] = case
        if uncovered:
            log.warning(
                "%s: %s steps stored without a step due (R05 cannot judge them), first: %s",
                context.source,
                len(uncovered),
                uncovered[0],
            )
        rows = [row for _, row in fresh]
        self._backend.insert(context.conn, self._tables["steps"], rows)
        self._backend.update_cases(
            context.conn,
            "supplement_count = supplement_count + {supplements}, return_count = return_count + {returns}",
            [("supplements", "integer"), ("returns", "integer")],
            [(supplements, returns, case_no) for case_no, (supplements, returns) in increments.items()],
        )
        self._notify(context, "step", rows)
        context.accept("step", fresh)
        self._again(context, "step", repeats)

    def _store_case_events(
        self, context: _BatchContext, kind: str, pending: list[Tagged], prepare: Callable[[Row], None] | None = None
    ) -> None:
        """Payments and evaluations: keyed by (case, time), need an existing case, change nothing on it."""
        firsts, repeats = self._split_repeats(pending, kind)
        fresh = self._drop_known(context, kind, firsts)
        fresh, cases = self._with_known_cases(context, kind, fresh)
        for _, row in fresh:
            if prepare is not None:
                prepare(row)
            row["case"] = cases[row["case_no"]]
        rows = [row for _, row in fresh]
        self._backend.insert(context.conn, self._tables[KIND_TABLES[kind]], rows)
        self._notify(context, kind, rows)
        context.accept(kind, fresh)
        self._again(context, kind, repeats)

    def _store_payments(self, context: _BatchContext, pending: list[Tagged]) -> None:
        self._store_case_events(context, "payment", pending)

    def _store_evaluations(self, context: _BatchContext, pending: list[Tagged]) -> None:
        def follow_up(row: Row) -> None:
            # A 4 or 5 ("dissatisfied") needs a follow-up (DOMAIN.md); it starts open.
            row["followup_status"] = "open" if row["satisfaction_code"] >= 4 else "none"

        self._store_case_events(context, "evaluation", pending, follow_up)

    def _store_completions(self, context: _BatchContext, pending: list[Tagged]) -> None:
        firsts, repeats = self._split_repeats(pending, "completion")
        fresh = self._drop_known(context, "completion", firsts)
        fresh, cases = self._with_known_cases(context, "completion", fresh)
        accepted: list[Pending] = []
        updates: list[tuple[Any, ...]] = []
        dt_param = self._backend.dt_param
        for line, row in fresh:
            case = cases[row["case_no"]]
            completed_at = row["completed_at"]
            if completed_at < case["accepted_at"]:
                context.reject(
                    "completion",
                    line,
                    row,
                    field_name="completed_at",
                    reason=BEFORE_ACCEPTANCE,
                    detail=f"completed {_shown(completed_at)} before the case was accepted "
                    f"({_shown(case['accepted_at'])})",
                )
                continue
            if case["status"] != "open":
                context.reject(
                    "completion",
                    line,
                    row,
                    field_name="case_no",
                    reason=INVALID_STATE,
                    detail=f"case {row['case_no']!r} is already {case['status']}",
                )
                continue
            try:
                # The working days used (a metric) need every year from acceptance to completion in the calendar:
                # without one, the record is rejected here rather than failing the whole batch later.
                row["workdays_used"] = self._workdays_used(case, completed_at)
            except CalendarError as exc:
                context.reject(
                    "completion",
                    line,
                    row,
                    field_name="completed_at",
                    reason=CALENDAR,
                    detail=_calendar_detail(self.calendar, case["accepted_at"], completed_at, exc),
                )
                continue
            # Each case appears once per round (_split_repeats) and was fetched for this round: update it in place.
            case["status"] = "completed"
            case["completed_at"] = completed_at
            row["case"] = case
            updates.append((dt_param(completed_at), row["case_no"]))
            accepted.append((line, row))
        rows = [row for _, row in accepted]
        self._backend.insert(context.conn, self._tables["completions"], rows)
        self._backend.update_cases(
            context.conn,
            "status = 'completed', completed_at = {completed_at}",
            [("completed_at", "timestamp")],
            updates,
        )
        self._notify(context, "completion", rows)
        context.accept("completion", accepted)
        self._again(context, "completion", repeats)

    def _store_complaints(self, context: _BatchContext, pending: list[Tagged]) -> None:
        firsts, repeats = self._split_repeats(pending, "complaint")
        fresh = self._drop_known(context, "complaint", firsts)
        rows = [row for _, row in fresh]
        self._backend.insert(context.conn, self._tables["complaints"], rows)
        self._notify(context, "complaint", rows)
        context.accept("complaint", fresh)
        self._again(context, "complaint", repeats)

    # -- special procedures (rare: one record at a time, in input order) ---------------------------------------
    def _store_procedures(self, context: _BatchContext, pending: list[Tagged]) -> None:
        started: list[Row] = []
        ended: list[Row] = []
        for line, kind, row in pending:
            if kind == "procedure_start":
                if self._start_procedure(context, line, row):
                    started.append(row)
            elif self._end_procedure(context, line, row):
                ended.append(row)
        self._notify(context, "procedure_start", started)
        self._notify(context, "procedure_end", ended)

    def _case_for_procedure(self, context: _BatchContext, kind: str, line: int, row: Row) -> Row | None:
        case = self._fetch_cases(context, [row["case_no"]], _CASE_READ_COLUMNS, lock=True).get(row["case_no"])
        if case is None:
            context.reject(
                kind, line, row, field_name="case_no", reason=UNKNOWN_CASE, detail=f"unknown case {row['case_no']!r}"
            )
        return case

    def _start_procedure(self, context: _BatchContext, line: int, row: Row) -> bool:
        table = self._tables["special_procedures"]
        conn = context.conn
        stored = (
            conn.execute(
                select(table.c.kind_code, table.c.reason).where(
                    and_(table.c.case_no == row["case_no"], table.c.started_at == row["started_at"])
                )
            )
            .mappings()
            .first()
        )
        if stored is not None:
            differing = _differences(row, stored, ("kind_code", "reason"))
            if differing:
                self._conflict(context, "procedure_start", line, row, old=stored, differing=differing)
            else:
                context.duplicate("procedure_start", line, row)
            return False
        case = self._case_for_procedure(context, "procedure_start", line, row)
        if case is None:
            return False
        if case["status"] != "open":
            context.reject(
                "procedure_start",
                line,
                row,
                field_name="case_no",
                reason=INVALID_STATE,
                detail=f"case {row['case_no']!r} is {case['status']}; a special procedure needs an open case",
            )
            return False
        if case["clock_stopped"]:
            context.reject(
                "procedure_start",
                line,
                row,
                field_name="case_no",
                reason=INVALID_STATE,
                detail=f"case {row['case_no']!r} already has a special procedure running",
            )
            return False
        if row["started_at"] < case["accepted_at"]:
            context.reject(
                "procedure_start",
                line,
                row,
                field_name="started_at",
                reason=BEFORE_ACCEPTANCE,
                detail=f"starts {_shown(row['started_at'])} before the case was accepted "
                f"({_shown(case['accepted_at'])})",
            )
            return False
        conn.execute(
            table.insert().values(
                case_no=row["case_no"],
                kind_code=row["kind_code"],
                started_at=row["started_at"],
                reason=row["reason"],
                result="",
                workdays=0,
            )
        )
        cases = self._tables["cases"]
        conn.execute(update(cases).where(cases.c.case_no == row["case_no"]).values(clock_stopped=True))
        case = dict(case)
        case["clock_stopped"] = True
        row["case"] = case
        context.accept("procedure_start", [(line, row)])
        return True

    def _end_procedure(self, context: _BatchContext, line: int, row: Row) -> bool:
        table = self._tables["special_procedures"]
        conn = context.conn
        stored = (
            conn.execute(
                select(table.c.result).where(
                    and_(table.c.case_no == row["case_no"], table.c.ended_at == row["ended_at"])
                )
            )
            .mappings()
            .first()
        )
        if stored is not None:
            if stored["result"] != row["result"]:
                self._conflict(context, "procedure_end", line, row, old=stored, differing=["result"])
            else:
                context.duplicate("procedure_end", line, row)
            return False
        case = self._case_for_procedure(context, "procedure_end", line, row)
        if case is None:
            return False
        open_procedure = (
            conn.execute(
                select(table)
                .where(and_(table.c.case_no == row["case_no"], table.c.ended_at.is_(None)))
                .order_by(table.c.started_at.desc())
            )
            .mappings()
            .first()
        )
        if open_procedure is None:
            context.reject(
                "procedure_end",
                line,
                row,
                field_name="case_no",
                reason=INVALID_STATE,
                detail=f"case {row['case_no']!r} has no special procedure running",
            )
            return False
        if row["ended_at"] < open_procedure["started_at"]:
            context.reject(
                "procedure_end",
                line,
                row,
                field_name="ended_at",
                reason=INCONSISTENT,
                detail=f"ends {_shown(row['ended_at'])} before the procedure started "
                f"({_shown(open_procedure['started_at'])})",
            )
            return False
        items = self._items_for(context, [case["implementation_code"]])
        item = items[case["implementation_code"]]
        limits = conn.execute(
            select(self._tables["cases"].c.promised_limit, self._tables["cases"].c.legal_limit).where(
                self._tables["cases"].c.case_no == row["case_no"]
            )
        ).one()
        try:
            workdays = procedure_workdays(self.calendar, open_procedure["started_at"], row["ended_at"])
            stop = case["clock_stop_workdays"] + workdays
            promised_due, legal_due = self._due_dates(
                item, case["accepted_at"], limits.promised_limit, limits.legal_limit, stop
            )
        except CalendarError as exc:
            context.reject(
                "procedure_end",
                line,
                row,
                field_name="ended_at",
                reason=CALENDAR,
                detail=f"cannot count the procedure's working days: {exc}",
            )
            return False
        conn.execute(
            update(table)
            .where(table.c.id == open_procedure["id"])
            .values(ended_at=row["ended_at"], result=row["result"], workdays=workdays)
        )
        cases = self._tables["cases"]
        conn.execute(
            update(cases)
            .where(cases.c.case_no == row["case_no"])
            .values(
                clock_stop_workdays=cases.c.clock_stop_workdays + workdays,
                promised_due_at=promised_due,
                legal_due_at=legal_due,
                clock_stopped=False,
            )
        )
        previous = {name: case[name] for name in ("promised_due_at", "legal_due_at", "clock_stop_workdays")}
        case = dict(case)
        case.update(clock_stop_workdays=stop, promised_due_at=promised_due, legal_due_at=legal_due, clock_stopped=False)
        procedure = dict(open_procedure)
        procedure.update(ended_at=row["ended_at"], result=row["result"], workdays=workdays)
        row["case"] = case
        row["procedure"] = procedure
        row["previous_case"] = previous
        context.accept("procedure_end", [(line, row)])
        return True


__all__ = [
    "ImportSummary",
    "Importer",
    "OutcomeCallback",
    "ProgressCallback",
    "RecordError",
    "RecordOutcome",
]
