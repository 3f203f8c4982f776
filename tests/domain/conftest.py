"""Tests of node.domain: the working-day calendar (State Council notices, the operator holiday file), date-time
parsing and formatting, and deadlines around weekends, holidays and clock stops.

No folder fixtures.
"""
