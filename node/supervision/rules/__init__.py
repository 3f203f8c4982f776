"""The rule engine: evaluates the rulebook on new records (events) and in the periodic scan, raising alerts."""

from node.supervision.rules.engine import RuleEngine, run_scan

__all__ = [
    "RuleEngine",
    "run_scan",
]
