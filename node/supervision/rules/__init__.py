"""The rule engine: evaluates the rulebook on new records (events) and in the periodic scan, raising alerts.

``engine`` holds the event-driven rules (RuleEngine, run by the RulesListener inside each import), ``scan`` the
time-driven ones (PeriodicScan, run_scan), ``context`` what both share (thresholds, deadlines, scan frontiers).
"""

from node.supervision.rules.engine import RuleEngine
from node.supervision.rules.scan import PeriodicScan, ScanResult, run_scan

__all__ = [
    "PeriodicScan",
    "RuleEngine",
    "ScanResult",
    "run_scan",
]
