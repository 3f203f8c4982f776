"""Tests of node.trust: the PKI mirroring the tree, enrolment (tokens, proofs, over the network), TLS and
ingest credentials, the ``supnet pki``/``enroll``/``keys`` commands, mutual TLS and authorization over a real tree
(tests.harness.tree), and the full authorization matrix of the 15-node demo tree.

No folder fixtures.
"""
