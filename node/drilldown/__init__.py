"""Drill-down: answers to ancestors' queries about this node's subtree, answered locally or routed one hop down."""

from node.drilldown.answers import answer_alerts, answer_case_detail, answer_cases
from node.drilldown.client import Answer, DrilldownClient
from node.drilldown.figures import answer_ranking, answer_summary
from node.drilldown.masking import mask_name
from node.drilldown.query_terms import to_ms
from node.drilldown.router import QueryRouter, build_query
from node.drilldown.spot_checks import DrilldownAsker, answer_spot_check
from node.drilldown.verify import GAUGES, replay, totals_differences, verify_target

__all__ = [
    "GAUGES",
    "Answer",
    "DrilldownAsker",
    "DrilldownClient",
    "QueryRouter",
    "answer_alerts",
    "answer_case_detail",
    "answer_cases",
    "answer_ranking",
    "answer_spot_check",
    "answer_summary",
    "build_query",
    "mask_name",
    "replay",
    "to_ms",
    "totals_differences",
    "verify_target",
]
