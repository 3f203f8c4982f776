"""Tests of node.server: ``supnet serve`` as a real process, the gRPC ingest stream against a real NodeServer,
health that follows the database, the outbox and the CRL (and ``supnet health``), and property-based fuzzing of
every RPC over a real two-node tree.

No folder fixtures.
"""
