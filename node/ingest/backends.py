"""The driver-level bulk paths of the import, one back end per database: inserts, key lookups, case updates.

SQLite goes through the sqlite3 cursor's executemany, with date-times pre-formatted in SQLAlchemy's own DATETIME
storage format (so the ORM reads them back); PostgreSQL through COPY for inserts, ``= ANY(array)`` for key lookups
and psycopg's pipelined executemany for updates. The importer's handlers decide what to write; this is how.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Numeric, Table

from node.errors import StoreError
from node.ingest.records import AnyRow
from node.store import copy_to_staging

# 'HH:MM:SS.000000' for each second of a day, built before the first day prefix (30 ms: not at every process start).
_CLOCK_TIMES: list[str] = []
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
            # Filled in one step (a slice assignment) before any day prefix exists: whoever finds a prefix finds all.
            if not _CLOCK_TIMES:
                _CLOCK_TIMES[:] = [
                    f"{h:02d}:{m:02d}:{s:02d}.000000" for h in range(24) for m in range(60) for s in range(60)
                ]
            prefix = _DAY_PREFIXES[ordinal] = value.date().isoformat() + " "
        text = prefix + _CLOCK_TIMES[value.hour * 3600 + value.minute * 60 + value.second]
    if len(_FORMATTED) >= _FORMATTED_SIZE:
        _FORMATTED.clear()
    _FORMATTED[value] = text
    return text


def _to_float(value: Decimal | None) -> float | None:
    # sqlite3 cannot bind Decimal; SQLAlchemy's Numeric binds a float on SQLite as well.
    return None if value is None else float(value)


class Backend:
    """The driver-level bulk paths of one database dialect."""

    placeholder = "?"
    # Per column type, the function that turns a Python value into what this driver binds (None: as is).
    datetime_binder: Callable[[datetime | None], Any] | None = None
    numeric_binder: Callable[[Decimal | None], Any] | None = None
    # A lookup of already converted datetimes (a C dict.get), tried before datetime_binder.
    known_datetime: Callable[[datetime], Any] = staticmethod(lambda _value: None)

    def __init__(self) -> None:
        self._plans: dict[tuple[str, bool], tuple[str, Callable[[AnyRow], tuple[Any, ...]]]] = {}

    def dt_param(self, value: datetime | None) -> Any:
        """A datetime as this driver binds it for our DateTime columns."""
        return value if self.datetime_binder is None else self.datetime_binder(value)

    def dt_result(self, value: Any) -> datetime | None:
        """A DateTime column value as the driver returns it, as a datetime."""
        return value  # type: ignore[no-any-return]

    def insert_plan(self, table: Table, *, complete: bool = False) -> tuple[str, Callable[[AnyRow], tuple[Any, ...]]]:
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

    def convert_rows(self, table: Table, rows: Sequence[AnyRow]) -> tuple[str, list[tuple[Any, ...]]]:
        """The column list and bind tuples of ``rows`` (all of one kind, so all with the same keys)."""
        columns = [c.name for c in table.columns if not (c.primary_key and c.autoincrement is True)]
        first = rows[0]
        complete = all(name in first for name in columns)
        names, convert = self.insert_plan(table, complete=complete)
        return names, [convert(row) for row in rows]

    def insert(self, conn: Connection, table: Table, rows: Sequence[AnyRow]) -> None:
        """Insert rows (missing columns take their model default)."""
        raise NotImplementedError

    def update_cases(
        self, conn: Connection, assignments: str, columns: Sequence[tuple[str, str]], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """UPDATE cases by case_no for many rows: ``assignments`` names values as {column}; rows end with case_no.

        ``columns`` are (name, SQL type) of the values before case_no. SQLite runs it as an executemany of keyed
        UPDATEs (in-process, each is an index probe); PostgreSQL as COPY into a staging table and one UPDATE ... FROM
        (PostgresBackend.update_cases).
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


class SqliteBackend(Backend):
    """SQLite: executemany through the sqlite3 cursor, datetimes as SQLAlchemy's storage strings."""

    placeholder = "?"
    datetime_binder = staticmethod(sqlite_datetime)
    numeric_binder = staticmethod(_to_float)
    known_datetime = _FORMATTED.get

    def dt_result(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    def insert(self, conn: Connection, table: Table, rows: Sequence[AnyRow]) -> None:
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


class PostgresBackend(Backend):
    """PostgreSQL: COPY for inserts, = ANY(array) for key lookups, COPY + UPDATE ... FROM for case updates."""

    placeholder = "%s"

    def update_cases(
        self, conn: Connection, assignments: str, columns: Sequence[tuple[str, str]], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        # One statement per batch instead of a pipelined UPDATE per case (a server parse/bind/execute each). The
        # join must probe the cases key index per staged row: PostgreSQL plans a hash join over a sequential scan of
        # all cases otherwise (it knows nothing of the staging table), which grows with the table, so the batch
        # switches the other join methods off for this one statement.
        if not rows:
            return
        names = [name for name, _ in columns]
        definition = ", ".join(f"{name} {sql_type}" for name, sql_type in columns) + ", case_no text"
        staging = copy_to_staging(conn, "supnet_case_updates", definition, [*names, "case_no"], rows)
        sets = assignments.format(**{name: f"u.{name}" for name in names})
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            # No parameters: one simple-protocol round trip for the three statements.
            cursor.execute(
                "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
                f"UPDATE cases SET {sets} FROM {staging} u WHERE cases.case_no = u.case_no; "
                "SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on"
            )
        finally:
            cursor.close()

    def insert(self, conn: Connection, table: Table, rows: Sequence[AnyRow]) -> None:
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
        # %b: the key list goes as a binary array; psycopg's text array dumper (a quoting regex per element) cost
        # several times the query.
        sql = f"SELECT {','.join(columns)} FROM {table} WHERE {key} = ANY(%b){order}"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, (list(keys),))
            return list(cursor.fetchall())
        finally:
            cursor.close()


def backend_for(engine: Engine) -> Backend:
    """The back end of the engine's database; StoreError for a database the import does not support."""
    if engine.dialect.name == "sqlite":
        return SqliteBackend()
    if engine.dialect.name == "postgresql":
        return PostgresBackend()
    raise StoreError(f"import supports SQLite and PostgreSQL, not {engine.dialect.name}")
