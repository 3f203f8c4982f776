"""Tests of the benchmarks in bench/: each one starts as the README runs it (a script) and as a module.

No folder fixtures.
"""
