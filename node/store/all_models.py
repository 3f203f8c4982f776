"""Imports every model module so Base.metadata knows every table (for Alembic and tests)."""

from federation import tables as federation_tables
from node.store import audit_models, directive_models, federation_models, models, supervision_models, web_models  # noqa: F401

# Every MetaData the migrations must create: the node's declarative Base and federation's Core tables.
ALL_METADATA = (models.Base.metadata, federation_tables.metadata)
