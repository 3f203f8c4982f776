"""Report-exchange tables (SQLAlchemy Core) on federation's own MetaData: outbox, received log, child chains.

Federation never imports node, so these live on a MetaData of their own with the same naming
convention as node.store.models; the node's Alembic environment targets both metadatas.
Date-times are naive local time of the node, like every other supnet table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Connection, Dialect

# Stable constraint names, so migrations are identical on SQLite and PostgreSQL; the node's own models use it too.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

OUTBOX_PENDING = "pending"
OUTBOX_ACKED = "acked"

# Reports this node built, oldest first; a row stays 'pending' until the parent acknowledges it.
outbox_table = Table(
    "federation_outbox",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False, comment="per-node report sequence"),
    Column("digest", LargeBinary(32), nullable=False, comment="SHA-256 over the canonical bytes"),
    Column("previous_digest", LargeBinary(32), nullable=False, comment="digest of sequence - 1 (empty for 1)"),
    Column("kind", String(12), nullable=False, comment="incremental | full"),
    Column("envelope", LargeBinary, nullable=False, comment="serialized SignedEnvelope, sent as is"),
    Column("bucket_count", Integer, nullable=False, default=0),
    Column("base_revision", BigInteger, nullable=False, default=0),
    Column("up_to_revision", BigInteger, nullable=False, default=0, comment="metric revision covered"),
    Column("status", String(8), nullable=False, default=OUTBOX_PENDING, comment="pending | acked"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("last_error", Text, nullable=False, default=""),
    Column("created_at", DateTime, nullable=False),
    Column("acked_at", DateTime, nullable=True),
    Index("ix_federation_outbox_status_sequence", "status", "sequence"),
)

# Every report received from a child; (child_id, sequence) is unique, the digest de-duplicates re-delivery.
received_reports = Table(
    "federation_received_reports",
    metadata,
    Column("child_id", String(200), primary_key=True),
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("kind", String(12), nullable=False, comment="incremental | full"),
    Column("envelope", LargeBinary, nullable=False, comment="the signed bytes exactly as received"),
    Column("bucket_count", Integer, nullable=False, default=0),
    Column("received_at", DateTime, nullable=False),
    Index("ix_federation_received_reports_received_at", "received_at"),
)

# The head of each child's hash chain plus the completeness counts of its latest report.
child_chains = Table(
    "federation_child_chains",
    metadata,
    Column("child_id", String(200), primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
    Column("last_digest", LargeBinary(32), nullable=False),
    Column("last_received_at", DateTime, nullable=False),
    Column("last_created_at_ms", BigInteger, nullable=False, default=0, comment="child's clock, unix ms"),
    Column("nodes_in_subtree", Integer, nullable=False, default=1),
    Column("nodes_reported_in_window", Integer, nullable=False, default=1),
)


SQLITE_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime in SQLite


def _sqlite_value(value: Any) -> Any:
    """A value as the SQLite driver gets it: datetimes in SQLAlchemy's text format, anything else as is."""
    return value.strftime(SQLITE_DATETIME_FORMAT) if isinstance(value, datetime) else value


@dataclass(frozen=True)
class DriverConnection:
    """A pooled DB-API connection used without a SQLAlchemy Connection (``engine.raw_connection()``)."""

    dbapi: Any
    dialect: Dialect


def _driver_of(conn: Connection | DriverConnection) -> tuple[Any, Dialect]:
    if isinstance(conn, DriverConnection):
        return conn.dbapi, conn.dialect
    return conn.connection.dbapi_connection, conn.dialect


class DriverStatement:
    """A Core statement compiled once per dialect and run on the DB-API cursor of the caller's connection.

    For the per-report hot paths of a parent's fan-in, where SQLAlchemy's per-execution work (parameter
    processing, result set-up) costs more than the statement itself. The statement still runs inside the
    caller's transaction (a SQLAlchemy Connection, or a DriverConnection for a transaction run on the driver
    alone). Parameters are passed by name; on SQLite, datetimes are written in SQLAlchemy's own text format so
    Core and ORM readers see the same values. Driver exceptions arrive unwrapped: catch
    ``driver_integrity_error(conn)`` for a constraint violation.
    """

    def __init__(self, statement: Any) -> None:
        self._statement = statement
        self._compiled: dict[tuple[str, str], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _sql(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        key = (dialect.name, str(dialect.paramstyle))
        compiled = self._compiled.get(key)
        if compiled is None:
            result = self._statement.compile(dialect=dialect)
            order = tuple(result.positiontup) if result.positional and result.positiontup else None
            # Literal values of the statement (e.g. the 1 of value + 1) are binds with fixed values.
            fixed = {name: bind.effective_value for name, bind in result.binds.items() if not bind.required}
            compiled = self._compiled[key] = (str(result), order, fixed)
        return compiled

    def _driver_params(self, dialect: Dialect, params: Mapping[str, Any]) -> Any:
        """Named parameters in the driver's form: a tuple for a positional driver, SQLite's datetime text."""
        _sql, order, fixed = self._sql(dialect)
        values = {**fixed, **params} if fixed else params
        if dialect.name != "sqlite":
            return dict(values) if order is None else tuple(values[name] for name in order)
        if order is None:
            return {name: _sqlite_value(value) for name, value in values.items()}
        # A name may stand at several positions (a value used twice in the statement).
        return tuple(_sqlite_value(values[name]) for name in order)

    def _run(self, conn: Connection | DriverConnection, params: Mapping[str, Any]) -> Any:
        dbapi, dialect = _driver_of(conn)
        cursor = dbapi.cursor()
        cursor.execute(self._sql(dialect)[0], self._driver_params(dialect, params))
        return cursor

    def execute(self, conn: Connection | DriverConnection, params: Mapping[str, Any]) -> None:
        """Run once with named parameters."""
        self._run(conn, params).close()

    def fetch_one(self, conn: Connection | DriverConnection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run once and return the first row (a plain tuple), or None."""
        cursor = self._run(conn, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else tuple(row)

    def fetch_all(self, conn: Connection | DriverConnection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run once and return every row as the driver gives it (SQLite: date-times as text, booleans as 0/1)."""
        cursor = self._run(conn, params)
        try:
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        finally:
            cursor.close()
        return rows

    def positions(self, dialect: Dialect) -> dict[str, int] | None:
        """Parameter name -> index for a positional driver (SQLite); None when the driver takes names."""
        _sql, order, _fixed = self._sql(dialect)
        return None if order is None else {name: index for index, name in enumerate(order)}

    def execute_each(self, conn: Connection | DriverConnection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run once per mapping of named parameters, in one executemany (one driver call for a whole batch)."""
        if params:
            _dbapi, dialect = _driver_of(conn)
            self.execute_many(conn, [self._driver_params(dialect, values) for values in params])

    def execute_many(self, conn: Connection | DriverConnection, rows: Sequence[Any]) -> None:
        """Run for many rows already in the driver's form (building rows directly in it keeps fan-in cheap).

        Rows are tuples ordered by ``positions`` for a positional driver (SQLite) or mappings by name; dates
        are ISO text on SQLite.
        """
        dbapi, dialect = _driver_of(conn)
        cursor = dbapi.cursor()
        try:
            cursor.executemany(self._sql(dialect)[0], rows)
        finally:
            cursor.close()


def driver_integrity_error(conn: Connection) -> type[Exception]:
    """The driver's own IntegrityError class (what a DriverStatement raises on a constraint violation)."""
    error: type[Exception] = conn.dialect.loaded_dbapi.IntegrityError
    return error
