"""Tests of node.synthetic: ``supnet generate`` and ``supnet demo`` (determinism, zero-rejection import,
distributions, network-wide codes).

No folder fixtures.
"""
