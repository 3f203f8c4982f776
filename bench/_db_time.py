"""Time spent inside the database driver during a benchmark: a profile of Python vs database without cProfile.

``time_database(engine)`` swaps the engine's pooled connections for ones whose cursors time every driver call
(execute, executemany, fetch*, COPY, commit) with ``perf_counter``: a few calls per batch, so the timing costs
nothing measurable, unlike cProfile, which inflates the per-record Python several times. What is left of the wall
time is Python: reading, validation, deadlines, metric deltas, rules, row conversion (including SQLAlchemy's own).

On SQLite the driver call is the database's own work (in-process); on PostgreSQL it is the round trip, the server's
work and psycopg's conversion of parameters and COPY rows.

Each call is also timed in this process's CPU time (``process_time``), in total and per statement (its verb and
table): on a loaded machine wall time also counts other people's work, CPU time does not. On SQLite that is the
database's own CPU; on PostgreSQL only psycopg's side (the server's CPU is another process).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


class DatabaseClock:
    """Seconds spent in driver calls (wall and CPU, CPU also per statement), and how many calls."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.cpu_by_statement: dict[str, float] = {}
        self.calls = 0

    def timed(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            return call(*args, **kwargs)
        finally:
            self._add(statement_label(call.__name__, args), started, cpu_started)

    @contextmanager
    def timed_block(self, manager: Any) -> Iterator[Any]:
        # A COPY block: entering, every row written and the end (which waits for the server) count as database.
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            with manager as inner:
                yield _TimedCopy(inner, self)
        finally:
            self._add("copy", started, cpu_started)

    def _add(self, label: str, started: float, cpu_started: float) -> None:
        cpu = time.process_time() - cpu_started
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += cpu
        self.cpu_by_statement[label] = self.cpu_by_statement.get(label, 0.0) + cpu
        self.calls += 1


def statement_label(call: str, args: tuple[Any, ...]) -> str:
    """A driver call's label for the per-statement CPU: the call, and for SQL its verb and table.

    >>> statement_label("executemany", ("INSERT INTO metric_buckets (day, department) VALUES (?, ?)",))
    'executemany INSERT metric_buckets'
    >>> statement_label("commit", ())
    'commit'
    """
    if not args or not isinstance(args[0], str):
        return call
    words = args[0].replace("(", " ").split()
    verb = words[0].upper() if words else ""
    # The table follows INTO (INSERT), FROM (SELECT, DELETE) or the verb itself (UPDATE).
    after = {"INSERT": "INTO", "SELECT": "FROM", "DELETE": "FROM"}.get(verb, verb)
    upper = [word.upper() for word in words]
    table = words[upper.index(after) + 1] if after in upper[:-1] else ""
    return f"{call} {verb} {table}".rstrip()


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


_TOP_STATEMENTS = 6


def profile_of(ours: dict[str, Any]) -> dict[str, Any]:
    """The import's wall and CPU time split into database driver calls and the rest (Python), as the JSON line has it.

    ``database_cpu_by_statement``: the statements that took the most CPU, in seconds (the first place to look).
    """
    database = ours["database_seconds"]
    database_cpu = ours["database_cpu_seconds"]
    by_statement: dict[str, float] = ours["database_cpu_by_statement"]
    top = sorted(by_statement.items(), key=lambda item: -item[1])[:_TOP_STATEMENTS]
    return {
        "database_s": round(database, 2),
        "python_s": round(ours["seconds"] - database, 2),
        "database_share": round(database / ours["seconds"], 3),
        "python_share": round(1 - database / ours["seconds"], 3),
        "database_calls": ours["database_calls"],
        "database_cpu_s": round(database_cpu, 2),
        "python_cpu_s": round(ours["cpu_seconds"] - database_cpu, 2),
        "database_cpu_share": round(database_cpu / ours["cpu_seconds"], 3),
        "database_cpu_by_statement": {label: round(seconds, 3) for label, seconds in top},
    }


def print_profile(name: str, profile: dict[str, Any]) -> None:
    print(
        f"{name} profile:               database (driver calls) {profile['database_s']:.1f} s "
        f"({profile['database_share']:.0%}, {profile['database_calls']:,} calls), "
        f"Python {profile['python_s']:.1f} s ({profile['python_share']:.0%})"
    )
    print(
        f"{name} in CPU time:            database {profile['database_cpu_s']:.2f} s "
        f"({profile['database_cpu_share']:.0%}), Python {profile['python_cpu_s']:.2f} s; by statement: "
        + ", ".join(f"{label} {seconds:.2f}" for label, seconds in profile["database_cpu_by_statement"].items())
    )
