"""Online, consistent database snapshots for backups, and putting them back.

SQLite: the online backup API copies the file in one step under one read transaction (WAL: writers go on), so
the copy is one committed state; it is written as a self-contained file (rollback journal, no ``-wal``).

PostgreSQL: a REPEATABLE READ transaction exports its snapshot (``pg_export_snapshot``) and reads the audit head
and schema revision; ``pg_dump --snapshot`` dumps the node's schema from that same snapshot (custom format) while
the transaction stays open, so the head in the manifest is exactly the dump's. ``pg_restore`` puts it back in
one transaction into a fresh schema of the same name; the schema it replaces is renamed aside, not dropped.
The client programs come from PATH (``postgresql-client``, at least the server's major version).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from federation import AuditHead
from node.errors import ConfigError, InvalidArgumentError, StoreError, UnavailableError
from node.store import make_engine

log = logging.getLogger(__name__)

SQLITE_FILE = "node.db"
PG_DUMP_FILE = "node.pgdump"
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
_SCHEMA_ENTRY = re.compile(r"^\s*\d+;\s+\d+\s+\d+\s+SCHEMA\s")


@dataclass(frozen=True)
class DatabaseSnapshot:
    """One snapshot written by :func:`snapshot_database`, and what it holds."""

    backend: str
    path: Path
    schema_revision: str | None
    audit_head: AuditHead | None
    pg_schema: str | None
    method: str


def backend_of(url: str) -> str:
    """``sqlite`` or ``postgresql``; InvalidArgumentError for anything else."""
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise InvalidArgumentError(f"backups support SQLite and PostgreSQL databases, not {backend}")
    return backend


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL (absolute)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise InvalidArgumentError(f"{url}: an in-memory SQLite database cannot be backed up")
    return Path(database).resolve()


def sqlite_files(url: str) -> list[Path]:
    """The database file and its companions (WAL, shared memory, journal): what a restore replaces."""
    path = sqlite_path(url)
    return [path, *(path.with_name(path.name + suffix) for suffix in _SQLITE_COMPANIONS)]


def snapshot_database(url: str, target_dir: Path) -> DatabaseSnapshot:
    """Write a consistent snapshot of the node's database into ``target_dir`` while the node keeps running."""
    if backend_of(url) == "sqlite":
        return _snapshot_sqlite(sqlite_path(url), target_dir / SQLITE_FILE)
    return _snapshot_postgresql(url, target_dir / PG_DUMP_FILE)


# --- SQLite ---------------------------------------------------------------------------------------------------


def _snapshot_sqlite(source: Path, target: Path) -> DatabaseSnapshot:
    if not source.is_file():
        raise StoreError(f"database file {source} does not exist")
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        # pages=-1: one step under one read transaction, so the copy is a single committed state.
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file; the node sets WAL when it opens it
    except sqlite3.Error as exc:
        raise StoreError(f"cannot snapshot {source}: {exc}") from exc
    finally:
        dst.close()
        src.close()
    os.chmod(target, 0o600)
    revision, head = _sqlite_facts(target)
    method = f"SQLite online backup API (SQLite {sqlite3.sqlite_version})"
    return DatabaseSnapshot("sqlite", target, revision, head, None, method)


def _sqlite_facts(path: Path) -> tuple[str | None, AuditHead | None]:
    connection = sqlite3.connect(path)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = None if row is None else str(row[0])
        head = None
        if "audit_log" in tables:
            row = connection.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            head = None if row is None else AuditHead(int(row[0]), str(row[1]))
        return revision, head
    finally:
        connection.close()


def sqlite_has_data(url: str) -> bool:
    """True when the SQLite file exists and holds a supnet schema."""
    path = sqlite_path(url)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    return _sqlite_facts(path)[0] is not None


def restore_sqlite(url: str, snapshot: Path, aside: Path) -> list[Path]:
    """Put the snapshot in place of the database file; the files it replaces move to ``aside`` (returned)."""
    files = sqlite_files(url)
    target = files[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.restoring")
    shutil.copyfile(snapshot, staged)
    os.chmod(staged, 0o600)
    moved = []
    # The old -wal must go before the new file arrives: SQLite would replay it into the restored database.
    for path in files:
        if path.exists():
            aside.mkdir(parents=True, exist_ok=True)
            destination = aside / path.name
            shutil.move(path, destination)
            moved.append(destination)
    os.replace(staged, target)
    return moved


# --- PostgreSQL ------------------------------------------------------------------------------------------------


def _client(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise UnavailableError(
            f"{program} not found on PATH: install the PostgreSQL client programs (package postgresql-client, "
            "at least the server's major version) to back up or restore a PostgreSQL node"
        )
    return found


def _conninfo(url: str) -> tuple[str, dict[str, str]]:
    """Libpq conninfo for pg_dump/pg_restore, and the environment carrying the password (never on argv)."""
    parsed = make_url(url)
    pairs: dict[str, str] = {}
    if parsed.host:
        pairs["host"] = parsed.host
    if parsed.port:
        pairs["port"] = str(parsed.port)
    if parsed.database:
        pairs["dbname"] = parsed.database
    if parsed.username:
        pairs["user"] = parsed.username
    for key, value in parsed.query.items():
        pairs[key] = value if isinstance(value, str) else value[-1]
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    quoted = " ".join(f"{key}='{_escape(value)}'" for key, value in pairs.items())
    return quoted, env


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _run(argv: list[str], env: dict[str, str], what: str) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - our argv
    if result.returncode != 0:
        raise StoreError(f"{what} failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def target_schema(conn: Connection) -> str:
    """The schema the connection's URL pins: the first entry of its search_path that names one."""
    path = str(conn.execute(text("SHOW search_path")).scalar())
    for entry in (part.strip() for part in path.split(",")):
        if entry and entry not in {'"$user"', "$user"}:
            return entry[1:-1].replace('""', '"') if entry.startswith('"') else entry
    return "public"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg_facts(conn: Connection, schema: str) -> tuple[str | None, AuditHead | None]:
    tables = {
        str(row[0])
        for row in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema})
    }
    revision = None
    if "alembic_version" in tables:
        value = conn.execute(text(f"SELECT version_num FROM {_quote(schema)}.alembic_version")).scalar()
        revision = None if value is None else str(value)
    head = None
    if "audit_log" in tables:
        row = conn.execute(text(f"SELECT seq, hash FROM {_quote(schema)}.audit_log ORDER BY seq DESC LIMIT 1")).first()
        head = None if row is None else AuditHead(int(row[0]), str(row[1]))
    return revision, head


@contextmanager
def _exported_snapshot(url: str) -> Iterator[tuple[str, str, str | None, AuditHead | None]]:
    """(snapshot id, schema, revision, audit head) of one REPEATABLE READ transaction, open while in the block."""
    engine = make_engine(url)
    try:
        with engine.connect() as plain:
            conn = plain.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.execute(text("SET TRANSACTION READ ONLY"))
                snapshot = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar())
                schema = target_schema(conn)
                revision, head = _pg_facts(conn, schema)
                yield snapshot, schema, revision, head
    finally:
        engine.dispose()


def _snapshot_postgresql(url: str, target: Path) -> DatabaseSnapshot:
    pg_dump = _client("pg_dump")
    conninfo, env = _conninfo(url)
    version = _run([pg_dump, "--version"], env, "pg_dump --version").strip()
    with _exported_snapshot(url) as (snapshot, schema, revision, head):
        if revision is None:
            raise StoreError(f"schema {schema} of {_shown(url)} holds no supnet database (no alembic_version)")
        _run(
            [
                pg_dump,
                "--format=custom",
                f"--schema={schema}",
                f"--snapshot={snapshot}",
                f"--file={target}",
                f"--dbname={conninfo}",
            ],
            env,
            "pg_dump",
        )
    os.chmod(target, 0o600)
    return DatabaseSnapshot("postgresql", target, revision, head, schema, f"{version}, custom format, one snapshot")


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def postgresql_state(url: str) -> tuple[str, bool]:
    """(the schema the URL pins, whether it already holds a supnet database)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            schema = target_schema(conn)
            revision, _ = _pg_facts(conn, schema)
        return schema, revision is not None
    except Exception as exc:
        raise StoreError(f"cannot reach {_shown(url)}: {exc}") from exc
    finally:
        engine.dispose()


def restore_postgresql(url: str, dump: Path, schema: str, *, stamp: str) -> str | None:
    """Restore the dump of ``schema`` in one transaction; an existing schema is renamed aside first (its new name).

    The node's URL must pin the same schema (ConfigError otherwise: the data would land where it does not look).
    """
    pg_restore = _client("pg_restore")
    conninfo, env = _conninfo(url)
    target, _ = postgresql_state(url)
    if target != schema:
        raise ConfigError(
            f"the backup holds PostgreSQL schema {schema!r} but {_shown(url)} uses {target!r}: restore with "
            f"--db-url whose search_path names {schema!r} (…?options=-csearch_path%3D{schema})"
        )
    listing = [
        line
        for line in _run([pg_restore, "--list", str(dump)], env, "pg_restore --list").splitlines()
        if not _SCHEMA_ENTRY.match(line)
    ]
    list_file = dump.with_name(dump.name + ".list")
    list_file.write_text("\n".join(listing) + "\n", encoding="utf-8")
    aside = _move_schema_aside(url, schema, stamp)
    try:
        _run(
            [
                pg_restore,
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                f"--use-list={list_file}",
                f"--dbname={conninfo}",
                str(dump),
            ],
            env,
            "pg_restore",
        )
    except BaseException:
        if aside is not None:
            _put_schema_back(url, schema, aside)
        raise
    return aside


def _move_schema_aside(url: str, schema: str, stamp: str) -> str | None:
    """Rename an existing schema to ``<schema>_replaced_<stamp>`` and create an empty one; its new name, or None."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            exists = (
                conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).scalar() is not None
            )
            aside = None
            if exists:
                aside = f"{schema}_replaced_{stamp}"[:63]
                conn.execute(text(f"ALTER SCHEMA {_quote(schema)} RENAME TO {_quote(aside)}"))
            conn.execute(text(f"CREATE SCHEMA {_quote(schema)}"))
        return aside
    finally:
        engine.dispose()


def _put_schema_back(url: str, schema: str, aside: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {_quote(schema)} CASCADE"))
            conn.execute(text(f"ALTER SCHEMA {_quote(aside)} RENAME TO {_quote(schema)}"))
        log.warning("restore failed: schema %s put back as it was", schema)
    finally:
        engine.dispose()
