"""Tests of the federation package (the wire protocol): canonical encoding, signed envelopes, report hash chains,
the audit hash chain, the durable outbox, gRPC status mapping, health and reflection, and generated code that
matches protos/.

No folder fixtures.
"""
