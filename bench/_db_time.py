"""Time spent inside the database driver during a benchmark: a profile of Python vs database without cProfile.

``time_database(engine)`` swaps the engine's pooled connections for ones whose cursors time every driver call
(execute, executemany, fetch*, COPY, commit) with ``perf_counter``: a few calls per batch, so the timing costs
nothing measurable, unlike cProfile, which inflates the per-record Python several times. What is left of the wall
time is Python: reading, validation, deadlines, metric deltas, rules, row conversion (including SQLAlchemy's own).

On SQLite the driver call is the database's own work (in-process); on PostgreSQL it is the round trip, the server's
work and psycopg's conversion of parameters and COPY rows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


class DatabaseClock:
    """Seconds spent in driver calls, and how many calls."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def timed(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    @contextmanager
    def timed_block(self, manager: Any) -> Iterator[Any]:
        # A COPY block: entering, every row written and the end (which waits for the server) count as database.
        started = time.perf_counter()
        try:
            with manager as inner:
                yield _TimedCopy(inner, self)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


class _TimedCopy:
    """psycopg Copy whose rows are written inside the enclosing timed block (nothing to add per row)."""

    def __init__(self, copy: Any, clock: DatabaseClock) -> None:
        self._copy = copy
        self._clock = clock

    def write_row(self, row: Any) -> None:
        self._copy.write_row(row)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._copy, name)


def time_database(engine: Engine) -> DatabaseClock:
    """Make ``engine``'s new connections time their driver calls; returns the clock (existing ones are dropped)."""
    clock = DatabaseClock()
    connection_class: Any = _sqlite_classes(clock) if engine.dialect.name == "sqlite" else _psycopg_classes(clock)

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        if engine.dialect.name == "sqlite":
            return sqlite3.connect(*cargs, factory=connection_class, **cparams)
        return connection_class.connect(*cargs, **cparams)

    engine.dispose()
    return clock


def _sqlite_classes(clock: DatabaseClock) -> type[sqlite3.Connection]:
    class TimedCursor(sqlite3.Cursor):
        def execute(self, *args: Any) -> Any:
            return clock.timed(super().execute, *args)

        def executemany(self, *args: Any) -> Any:
            return clock.timed(super().executemany, *args)

        def fetchall(self) -> Any:
            return clock.timed(super().fetchall)

        def fetchmany(self, *args: Any) -> Any:
            return clock.timed(super().fetchmany, *args)

        def fetchone(self) -> Any:
            return clock.timed(super().fetchone)

    class TimedConnection(sqlite3.Connection):
        def cursor(self, *args: Any) -> Any:
            return super().cursor(TimedCursor)

        def commit(self) -> None:
            clock.timed(super().commit)

        def rollback(self) -> None:
            clock.timed(super().rollback)

    return TimedConnection


def _psycopg_classes(clock: DatabaseClock) -> Any:
    import psycopg

    class TimedCursor(psycopg.Cursor):
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            return clock.timed(super().execute, *args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            return clock.timed(super().executemany, *args, **kwargs)

        def fetchall(self) -> Any:
            return clock.timed(super().fetchall)

        def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
            return clock.timed(super().fetchmany, *args, **kwargs)

        def fetchone(self) -> Any:
            return clock.timed(super().fetchone)

        def copy(self, *args: Any, **kwargs: Any) -> Any:
            return clock.timed_block(super().copy(*args, **kwargs))

    class TimedConnection(psycopg.Connection):
        def commit(self) -> None:
            clock.timed(super().commit)

        def rollback(self) -> None:
            clock.timed(super().rollback)

        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("cursor_factory", TimedCursor)
            return super().connect(*args, **kwargs)

    return TimedConnection


def profile_of(ours: dict[str, Any]) -> dict[str, Any]:
    """The import's wall time split into database driver calls and the rest (Python), as the JSON line has it."""
    database = ours["database_seconds"]
    return {
        "database_s": round(database, 2),
        "python_s": round(ours["seconds"] - database, 2),
        "database_share": round(database / ours["seconds"], 3),
        "python_share": round(1 - database / ours["seconds"], 3),
        "database_calls": ours["database_calls"],
    }


def print_profile(name: str, profile: dict[str, Any]) -> None:
    print(
        f"{name} profile:               database (driver calls) {profile['database_s']:.1f} s "
        f"({profile['database_share']:.0%}, {profile['database_calls']:,} calls), "
        f"Python {profile['python_s']:.1f} s ({profile['python_share']:.0%})"
    )
