"""Imports every model module so Base.metadata knows every table (for Alembic and tests)."""

from node.store import models, supervision_models  # noqa: F401
