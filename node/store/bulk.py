"""Set-based bulk writes on PostgreSQL: rows COPY'd into a session temp table, then moved by one statement.

The import's case updates (node.ingest.backends) and the metric bucket upserts (node.supervision.metrics) load a
batch's rows into a staging table with psycopg's COPY and apply them with ONE ``UPDATE ... FROM`` or
``INSERT ... SELECT ... ON CONFLICT``: per-row statements (even pipelined) cost a server parse/bind/execute each, and
binding Python lists as arrays cost more in psycopg's array dumper than the statement itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table


def copy_to_staging(
    conn: Connection, name: str, definition: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> str:
    """Empty (creating it first if this session lacks it) a temp table and COPY ``rows`` into ``columns``.

    Returns the table's name: ``name`` and a digest of ``definition``, so another column set gets its own table.
    The table lives as long as the database session, so later batches only truncate it; a rolled-back batch that
    created it takes it away, and the next one creates it again. Names and definitions are our own constants.
    """
    name = f"{name}_{zlib.crc32(definition.encode()):08x}"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        # No IF NOT EXISTS: its "already exists" notice would be a log line per batch. Look the table up instead.
        cursor.execute("SELECT to_regclass(%s) IS NULL", (f"pg_temp.{name}",))
        (missing,) = cursor.fetchone() or (True,)
        cursor.execute(f"CREATE TEMP TABLE {name} ({definition})" if missing else f"TRUNCATE {name}")
        with cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()
    return name


def staging_definition(conn: Connection, table: Table, columns: Sequence[str]) -> str:
    """The column definitions of a staging table for ``columns`` of ``table``: same names and types, no constraints."""
    return ", ".join(f"{name} {table.c[name].type.compile(dialect=conn.dialect)}" for name in columns)
