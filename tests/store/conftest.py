"""Tests of node.store: migrations create every model table, on SQLite and PostgreSQL.

No folder fixtures.
"""
