"""Alembic environment of supnet's schema, for ``supnet db`` / ``migrate()`` and for the ``alembic`` command.

Where the database is, first match wins:

1. the engine (online) or URL (offline SQL) that node.store.database puts in ``config.attributes``;
2. ``alembic -x url=URL``, or the environment variable ``SUPNET_DATABASE_URL``;
3. ``alembic -x data_dir=DIR``, or ``SUPNET_DATA_DIR``: the node's ``supnet.toml`` (``store.url``, else its
   SQLite file) — the same URL every ``supnet`` command uses;
4. ``sqlalchemy.url`` of the ini file (``alembic.ini`` at the repository root leaves it empty).

``alembic --sql`` (offline mode) renders the SQL without connecting, as ``supnet db upgrade --sql`` does.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from node.store.all_models import ALL_METADATA
from node.store.database import make_engine, normalized_url

# A list: the node's declarative Base plus federation's own MetaData (federation never imports node).
target_metadata = list(ALL_METADATA)

config = context.config


def _database_url() -> str:
    """The URL for the ``alembic`` command (cases 2-4 of the module docstring)."""
    given = context.get_x_argument(as_dictionary=True)
    url = given.get("url") or os.environ.get("SUPNET_DATABASE_URL")
    if url:
        return normalized_url(url)
    data_dir = given.get("data_dir") or given.get("data-dir") or os.environ.get("SUPNET_DATA_DIR")
    if data_dir:
        # The node's own config decides, exactly as for `supnet` (ignored by import-linter: see pyproject.toml).
        from node.config import database_url, load_config

        directory = Path(data_dir)
        return normalized_url(database_url(directory, load_config(directory)))
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return normalized_url(url)
    raise SystemExit(
        "supnet migrations: no database given. Use 'alembic -x data_dir=DATA_DIR …' (the node's supnet.toml), "
        "'alembic -x url=URL …', SUPNET_DATA_DIR / SUPNET_DATABASE_URL, or 'supnet db … --data-dir DATA_DIR'"
    )


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit the migrations as SQL text for the URL's dialect; nothing connects."""
    url = config.attributes.get("url") or _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=make_url(url).get_backend_name() == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the caller's engine, or on one built from the URL (the ``alembic`` command)."""
    engine: Engine | None = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        engine = make_engine(_database_url())
    try:
        with engine.begin() as connection:
            _configure(connection)
            context.run_migrations()
    finally:
        if owned:
            engine.dispose()


if config.config_file_name is not None and not config.attributes:
    # The `alembic` command with an ini file: its logging sections apply (supnet configures its own logging).
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
