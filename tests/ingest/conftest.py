"""Tests of node.ingest: reading import files, validating records (general and generated fast path), and the
import pipeline on SQLite and PostgreSQL, including property-based fuzzing of records.

No folder fixtures.
"""
