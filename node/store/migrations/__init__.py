"""Alembic migrations of the node schema."""
