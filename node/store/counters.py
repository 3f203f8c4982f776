"""Named node counters (``node_counters``) and the metric revision, the one counter every metric writer takes.

The metric revision orders metric writes: a writer takes its row first (``lock_revision``), so on PostgreSQL writers
serialize on it and on SQLite the write makes the transaction the single writer. ``next_revision`` is the only
place that advances it. Datetimes are kept in counters as integer microseconds (``to_micros``/``from_micros``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Connection, Date, String, Table, bindparam, cast, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from federation import DriverStatement
from node.store.supervision_models import NodeCounter

__all__ = [
    "CATALOGUE_COUNTER",
    "REVISION_COUNTER",
    "catalogue_revision",
    "compare_and_set_counter",
    "counter_value",
    "counter_values",
    "current_revision",
    "dialect_insert",
    "from_micros",
    "increment_counter",
    "lock_revision",
    "locked_revision",
    "lower_counter",
    "next_catalogue_revision",
    "next_revision",
    "set_counter",
    "to_micros",
]

REVISION_COUNTER = "metric_revision"
# Moves with every write to what the item-register figures are computed from (items, item_versions,
# child_catalogues), so a report builder may reuse the figures it computed under the same value (node.reporting).
CATALOGUE_COUNTER = "catalogue_revision"

_counters: Table = NodeCounter.__table__  # type: ignore[assignment]


def month_start_sql(conn: Connection | str, day: Any) -> ColumnElement[Any]:
    """The first day of a Date column's month in SQL, to group by month in the database (str(value)[:7]: 'YYYY-MM').

    A date on PostgreSQL; ISO text on SQLite, where SQLAlchemy stores dates as 'YYYY-MM-DD'. ``conn``: a connection
    or its dialect's name (for a statement compiled once per dialect).
    """
    if (conn if isinstance(conn, str) else conn.dialect.name) == "postgresql":
        return cast(func.date_trunc("month", day), Date)
    return func.substr(day, 1, 7).concat(literal("-01"))


def dialect_insert(conn: Connection, table: Table) -> Any:
    """An INSERT supporting ON CONFLICT for the connection's dialect (SQLite >= 3.24 and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """A naive local datetime as an integer (µs since 1970-01-01 local) for a node counter."""
    return (value - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """Inverse of ``to_micros``."""
    return _EPOCH + value * _MICROSECOND


# Counter statements are built once per dialect and reused with bound values: they run on every scan and import
# batch, where building SQLAlchemy expressions would cost more than executing them.
_COUNTER_STATEMENTS: dict[tuple[str, str], Any] = {}


def _counter_statement(conn: Connection, purpose: str) -> Any:
    key = (conn.dialect.name, purpose)
    stmt = _COUNTER_STATEMENTS.get(key)
    if stmt is not None:
        return stmt
    c = _counters.c
    name = bindparam("b_name", type_=String())
    value = bindparam("b_value", type_=BigInteger())
    expected = bindparam("b_expected", type_=BigInteger())
    if purpose == "read":
        stmt = select(c.name, c.value).where(c.name.in_(bindparam("b_names", expanding=True)))
    elif purpose == "set":
        stmt = dialect_insert(conn, _counters).values(name=name, value=value)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"value": stmt.excluded.value})
    elif purpose == "add":
        stmt = dialect_insert(conn, _counters).values(name=name, value=value)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"value": c.value + value}).returning(c.value)
    elif purpose == "insert_missing":
        stmt = dialect_insert(conn, _counters).values(name=name, value=value)
        stmt = stmt.on_conflict_do_nothing(index_elements=["name"])
    elif purpose == "lower":
        stmt = update(_counters).where(c.name == name, c.value > value).values(value=value)
    elif purpose == "compare_and_set":
        stmt = update(_counters).where(c.name == name, c.value == expected).values(value=value)
    elif purpose == "lock":
        stmt = dialect_insert(conn, _counters).values(name=REVISION_COUNTER, value=0)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"value": c.value})
    else:
        raise ValueError(purpose)
    _COUNTER_STATEMENTS[key] = stmt
    return stmt


def counter_values(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    """The values of the named node counters that exist (one query)."""
    rows = conn.execute(_counter_statement(conn, "read"), {"b_names": list(names)})
    return {row.name: int(row.value) for row in rows}


def counter_value(conn: Connection, name: str) -> int | None:
    """The value of a named node counter, or None when it was never set."""
    return counter_values(conn, [name]).get(name)


def set_counter(conn: Connection, name: str, value: int) -> None:
    """Set a named node counter (insert or overwrite)."""
    conn.execute(_counter_statement(conn, "set"), {"b_name": name, "b_value": value})


def increment_counter(conn: Connection, name: str, step: int = 1) -> int:
    """Add ``step`` to a named node counter (created at ``step``) and return its new value."""
    return int(conn.execute(_counter_statement(conn, "add"), {"b_name": name, "b_value": step}).scalar_one())


def lower_counter(conn: Connection, name: str, value: int) -> None:
    """Lower an EXISTING counter to ``value`` if it is higher (atomic); a missing counter stays missing."""
    conn.execute(_counter_statement(conn, "lower"), {"b_name": name, "b_value": value})


def compare_and_set_counter(conn: Connection, name: str, expected: int | None, value: int) -> bool:
    """Set a counter only if it still holds ``expected`` (None: still missing); False when someone changed it."""
    if expected is None:
        result = conn.execute(_counter_statement(conn, "insert_missing"), {"b_name": name, "b_value": value})
    else:
        params = {"b_name": name, "b_value": value, "b_expected": expected}
        result = conn.execute(_counter_statement(conn, "compare_and_set"), params)
    return bool(result.rowcount)


def lock_revision(conn: Connection) -> None:
    """Take the metric revision row (a write lock held until commit) FIRST, before reading what decides a write.

    Every metric writer and the report builder take this row first, so on PostgreSQL each sees what the previous
    holder committed, and on SQLite the write makes this transaction the single writer.
    """
    conn.execute(_counter_statement(conn, "lock"))


def locked_revision(conn: Connection) -> int:
    """``lock_revision``, then the revision as of the lock (the report builder's snapshot of what it may send)."""
    lock_revision(conn)
    return current_revision(conn)


def current_revision(conn: Connection) -> int:
    """The node's current metric revision (0 before any metric write)."""
    return counter_value(conn, REVISION_COUNTER) or 0


def next_revision(conn: Connection, count: int = 1) -> int:
    """Take ``count`` new metric revisions and return the last (locks the revision row until commit).

    The revisions taken are the ``count`` consecutive values ending at the one returned. The only writer of the
    metric revision.
    """
    if conn.in_transaction():
        # Inside a begun transaction (applying a child report: per report), on the driver: SQLAlchemy's
        # per-execution work costs more than this one-row upsert. Outside one, SQLAlchemy begins it.
        row = _revision_statement(conn).fetch_one(conn, {"b_name": REVISION_COUNTER, "b_value": count})
        assert row is not None  # INSERT .. ON CONFLICT DO UPDATE .. RETURNING always yields the row
        return int(row[0])
    return increment_counter(conn, REVISION_COUNTER, count)


_REVISION_STATEMENTS: dict[str, DriverStatement] = {}


def _revision_statement(conn: Connection) -> DriverStatement:
    """The "add" counter statement of the connection's dialect, run on the driver."""
    statement = _REVISION_STATEMENTS.get(conn.dialect.name)
    if statement is None:
        statement = _REVISION_STATEMENTS[conn.dialect.name] = DriverStatement(_counter_statement(conn, "add"))
    return statement


def catalogue_revision(conn: Connection) -> int:
    """The catalogue revision (0 before any register change was counted)."""
    return counter_value(conn, CATALOGUE_COUNTER) or 0


def next_catalogue_revision(conn: Connection) -> int:
    """Count a change of the item register (items, versions, explanations) or of a child's catalogue figures.

    Every writer of those tables calls this in the writing transaction, so the figures a builder computed under one
    value are those of every later read under the same value. Lock order: the metric revision row (when the
    transaction takes it) before this row, and this row before any items row, so that no two writers deadlock.
    """
    return increment_counter(conn, CATALOGUE_COUNTER)
