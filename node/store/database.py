"""Engine set-up for SQLite (WAL, one file per node) and PostgreSQL, and the schema's migrations.

``migrate`` brings a database to the head revision (what writing commands do when they open a node);
``schema_state`` / ``require_current_schema`` tell a read-only command whether the schema is current without
changing it (``SchemaOutdatedError`` names the command to run); ``upgrade_sql`` renders the upgrade as SQL
(Alembic's offline mode) for a DBA to review. ``migrations/env.py`` serves both us and the ``alembic`` command.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from node.errors import StoreError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class SchemaOutdatedError(StoreError):
    """The database schema is not at this supnet's head revision; the message names the command that fixes it."""

    code = "SCHEMA_OUTDATED"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (drill-down, stats) run while an import writes; NORMAL sync is safe with WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def make_engine(url: str, *, schema: str | None = None) -> Engine:
    """Create an engine; SQLite gets WAL pragmas, PostgreSQL may be pinned to a schema."""
    parsed = make_url(normalized_url(url))
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        if schema:
            # Each test (or tenant) can live in its own schema of one database.
            kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot open database {parsed.render_as_string(hide_password=True)}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def normalized_url(url: str) -> str:
    """The URL with the driver we use (``postgresql://`` means psycopg 3), as make_engine connects to it."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def alembic_config(engine: Engine | None = None, *, url: str | None = None) -> AlembicConfig:
    """An Alembic config for our migrations: on an existing engine, or (offline SQL) for a URL's dialect."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["engine"] = engine
    if url is not None:
        cfg.attributes["url"] = normalized_url(url)
    return cfg


@cache
def head_revision() -> str:
    """The newest revision this supnet's migrations know."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None  # there are migrations
    return head


@cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions())


def revision_known(revision: str) -> bool:
    """True when this supnet's migrations know ``revision`` (a database from a newer supnet has one it does not)."""
    return revision in _known_revisions()


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands: its revision (None: no schema yet) and this supnet's head."""

    current: str | None
    head: str
    known: bool

    @property
    def up_to_date(self) -> bool:
        """True when the database is at the head revision."""
        return self.current == self.head

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"current": self.current, "head": self.head, "up_to_date": self.up_to_date, "known": self.known}


def schema_state(engine: Engine) -> SchemaState:
    """Read the database's revision (one query; nothing is changed)."""
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the schema revision of {_shown(engine)}: {exc}") from exc
    return SchemaState(current=current, head=head_revision(), known=current is None or current in _known_revisions())


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _newer_message(state: SchemaState, engine: Engine) -> str:
    return (
        f"database {_shown(engine)} is at schema revision {state.current}, which this supnet (head {state.head}) "
        "does not know: a newer supnet upgraded it; run that version (or restore a backup taken before)"
    )


def require_current_schema(engine: Engine, *, upgrade_command: str) -> SchemaState:
    """Check the schema is at head without changing it; SchemaOutdatedError naming ``upgrade_command`` if not."""
    state = schema_state(engine)
    if state.up_to_date:
        return state
    if not state.known:
        raise SchemaOutdatedError(_newer_message(state, engine))
    if state.current is None:
        raise SchemaOutdatedError(
            f"database {_shown(engine)} has no supnet schema yet (head is {state.head}): run '{upgrade_command}' "
            "(read-only commands never change the schema)"
        )
    raise SchemaOutdatedError(
        f"database schema is at revision {state.current}, this supnet needs {state.head}: run '{upgrade_command}' "
        "(read-only commands never change the schema; 'supnet db upgrade --sql' prints the SQL to review first)"
    )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (idempotent)."""
    state = schema_state(engine)
    if not state.known:
        raise StoreError(_newer_message(state, engine))
    if state.current == (state.head if revision == "head" else revision):
        return  # nothing to do: do not even load the migration environment
    log.info("migrating %s from schema revision %s to %s", _shown(engine), state.current, revision)
    try:
        command.upgrade(alembic_config(engine), revision)
    except (SQLAlchemyError, CommandError) as exc:
        raise StoreError(f"migration failed: {exc}") from exc


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema down to ``revision`` (tests of upgrades; operators restore a backup instead)."""
    try:
        command.downgrade(alembic_config(engine), revision)
    except (SQLAlchemyError, CommandError) as exc:
        raise StoreError(f"downgrade failed: {exc}") from exc


def upgrade_sql(url: str, *, from_revision: str | None, to_revision: str = "head") -> str:
    """The SQL that upgrades a database of ``url``'s dialect from ``from_revision`` (None: empty) to ``to_revision``.

    Alembic's offline mode: nothing connects; the text is what ``migrate`` would run, for a DBA to review.
    """
    buffer = io.StringIO()
    cfg = alembic_config(url=url)
    cfg.output_buffer = buffer
    span = f"{from_revision}:{to_revision}" if from_revision else to_revision
    try:
        command.upgrade(cfg, span, sql=True)
    except (SQLAlchemyError, CommandError, NotImplementedError) as exc:
        raise StoreError(f"cannot render the upgrade {span} as SQL: {exc}") from exc
    return buffer.getvalue()


def has_schema(engine: Engine) -> bool:
    """True when the approval tables exist."""
    return inspect(engine).has_table("cases")
