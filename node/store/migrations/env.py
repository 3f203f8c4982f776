"""Alembic environment: runs migrations on the engine handed in by node.store.database.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from node.store.all_models import ALL_METADATA

# A list: the node's declarative Base plus federation's own MetaData (federation never imports node).
target_metadata = list(ALL_METADATA)


def run_migrations_online() -> None:
    """Run migrations on the caller's engine (we never build one from an ini file)."""
    engine: Engine = context.config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


run_migrations_online()
