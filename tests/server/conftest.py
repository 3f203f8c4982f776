"""Tests of node.server: ``supnet serve`` as a real process, the gRPC ingest stream against a real NodeServer,
and property-based fuzzing of every RPC over a real two-node tree.

No folder fixtures.
"""
