"""``supnet db``: the schema of a node's database — ``current`` (where it stands) and ``upgrade`` (``--sql``: review).

Read-only commands never migrate; on an old schema they name ``supnet db upgrade --data-dir DIR``, which migrates
and then rebuilds the metric figures when a revision asked for it. ``--sql`` prints what would run instead
(Alembic's offline mode), from the database's current revision, for a DBA to review and apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import text

from node.audit_log import Action, AuditLog, operator_actor
from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.config import database_url, load_config
from node.errors import StoreError
from node.store import make_engine, migrate, schema_state, upgrade_sql


def _schema_name(url: str) -> str | None:
    """The PostgreSQL schema the node's URL pins (its search_path), None for SQLite or the default."""
    engine = make_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            return None
        with engine.connect() as conn:
            name = conn.execute(text("SELECT current_schema()")).scalar()
        return None if name in (None, "public") else str(name)
    finally:
        engine.dispose()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def register(app: typer.Typer) -> None:
    """Add ``supnet db current|upgrade``."""
    group = typer.Typer(
        help="The node's database schema: current, upgrade (--sql to review first).", no_args_is_help=True
    )
    app.add_typer(group, name="db")

    @group.command("current")
    @handle_errors
    def current_command(data_dir: DataDir, as_json: JsonFlag = False) -> None:
        """Print the database's schema revision and this supnet's head; exit 1 when an upgrade is due."""
        config = load_config(data_dir)
        engine = make_engine(database_url(data_dir, config))
        try:
            state = schema_state(engine)
            shown = engine.url.render_as_string(hide_password=True)
        finally:
            engine.dispose()
        if as_json:
            print_json({"database": shown, **state.to_dict()})
        elif state.up_to_date:
            console.print(f"{state.current} (head) — {shown}", highlight=False)
        else:
            console.print(
                f"{state.current or '(no schema)'} — head is {state.head}: run 'supnet db upgrade --data-dir "
                f"{data_dir}' ({shown})",
                highlight=False,
            )
        if not state.up_to_date:
            raise typer.Exit(1)

    @group.command("upgrade")
    @handle_errors
    def upgrade_command(
        data_dir: DataDir,
        sql: Annotated[
            bool,
            typer.Option("--sql", help="Print the SQL from the current revision to head instead of running it."),
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Bring the schema to head and rebuild the metric figures if a revision asks for it (take a backup first)."""
        if sql:
            _print_sql(data_dir)
            return
        from node.app import open_node
        from node.supervision import rebuild_buckets_if_needed

        config = load_config(data_dir)
        engine = make_engine(database_url(data_dir, config))
        try:
            before = schema_state(engine)
            migrate(engine)  # whatever store.auto_migrate says: this is the command that migrates
        finally:
            engine.dispose()
        node = open_node(data_dir)
        try:
            rebuilt = rebuild_buckets_if_needed(node)
            after = schema_state(node.engine)
            if before.current != after.current:
                AuditLog(node.engine).record(
                    actor=operator_actor(node.config.id),
                    action=Action.DB_UPGRADED,
                    target=node.config.id,
                    detail={"from": before.current, "to": after.current},
                )
        finally:
            node.close()
        upgraded = before.current != after.current
        if as_json:
            print_json({"from": before.current, "to": after.current, "upgraded": upgraded, "figures_rebuilt": rebuilt})
            return
        if upgraded:
            console.print(f"schema upgraded {before.current or '(empty)'} → {after.current}", highlight=False)
        else:
            console.print(f"schema already at {after.current} (head)", highlight=False)
        if rebuilt:
            console.print("metric figures rebuilt from the records (a revision asked for it)", highlight=False)


def _print_sql(data_dir: Path) -> None:
    """The upgrade as SQL, from the database's revision (read, nothing changed) to head."""
    config = load_config(data_dir)
    url = database_url(data_dir, config)
    engine = make_engine(url)
    try:
        state = schema_state(engine)
        dialect = engine.dialect.name
    finally:
        engine.dispose()
    if state.up_to_date:
        typer.echo(f"-- schema already at {state.head} (head): nothing to run")
        return
    try:
        body = upgrade_sql(url, from_revision=state.current)
    except StoreError as exc:
        if dialect != "sqlite":
            raise
        # SQLite rebuilds a table to alter a column, which needs the live file (Alembic's batch mode).
        raise StoreError(
            f"this upgrade cannot be written out as SQL for SQLite ({exc.message}); take 'supnet backup --data-dir "
            f"{data_dir} --out FILE' and run 'supnet db upgrade --data-dir {data_dir}'"
        ) from exc
    header = [f"-- supnet schema upgrade {state.current or '(empty)'} -> {state.head} ({dialect})"]
    schema = _schema_name(url)
    if schema is not None:
        header.append(f"SET search_path TO {_quoted(schema)};")
    header.append(
        f"-- afterwards run 'supnet db upgrade --data-dir {data_dir}' once: it rebuilds the metric figures if asked"
    )
    typer.echo("\n".join(header) + "\n\n" + body, nl=False)
