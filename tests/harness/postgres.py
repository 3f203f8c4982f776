"""The PostgreSQL server of the tests: where it is, whether it must be there, and a fresh schema per use.

Without the server the PostgreSQL tests skip, except under CI=true, where a skip would hide a gap: they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("SUPNET_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_PG_OK: bool | None = None


def _pg_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def require_postgres() -> None:
    """Skip when PostgreSQL is missing, but fail under CI where a skip would hide a gap."""
    global _PG_OK
    if _PG_OK is None:
        _PG_OK = _pg_available()
    if not _PG_OK:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN_URL} (required under CI)")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")


@contextmanager
def fresh_schema_url() -> Iterator[str]:
    """A URL pinned (via search_path) to a fresh schema in the test database; the schema is dropped afterwards."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
