"""Alembic environment: runs migrations on the engine handed in by node.store.database.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

import node.store.all_models  # noqa: F401  (registers every table on Base.metadata)
from node.store.models import Base

target_metadata = Base.metadata


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
