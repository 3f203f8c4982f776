"""Drill-down: ancestors' queries about this node's subtree, answered locally or routed one hop down.

Also the subtree search: every node of a subtree at once, each part signed by its node, verified by the asker.
"""

from node.drilldown.answers import answer_alerts, answer_case_detail, answer_cases
from node.drilldown.client import Answer, DrilldownClient
from node.drilldown.figures import answer_ranking, answer_summary, rank_entries
from node.drilldown.masking import mask_name
from node.drilldown.query_terms import to_ms
from node.drilldown.router import RECONNECT_GRACE_SECONDS, QueryRouter, build_query
from node.drilldown.spot_checks import DrilldownAsker, answer_spot_check
from node.drilldown.stored_reports import answer_report
from node.drilldown.subtree import SubtreeRouter, SubtreeStats
from node.drilldown.subtree_answer import (
    MissingNode,
    SubtreeClient,
    SubtreeCollector,
    SubtreeOutcome,
    SubtreeSearch,
    VerifiedPart,
    search_subtree,
)
from node.drilldown.subtree_audit import SubtreeAuditor
from node.drilldown.subtree_terms import (
    KINDS as SUBTREE_KINDS,
)
from node.drilldown.subtree_terms import (
    MAX_LIMIT as SUBTREE_MAX_LIMIT,
)
from node.drilldown.subtree_terms import (
    build_subtree_query,
    decode_resume,
    encode_resume,
    rows_of,
)
from node.drilldown.subtree_terms import check_request as check_subtree_request
from node.drilldown.verify import GAUGES, Verifier, VerifyResult, replay, totals_differences
from node.drilldown.verify_figures import replay_vectors, vector
from node.drilldown.verify_recheck import RECHECK_WAIT_SECONDS, recheck_moved, verify_target

__all__ = [
    "GAUGES",
    "RECHECK_WAIT_SECONDS",
    "RECONNECT_GRACE_SECONDS",
    "SUBTREE_KINDS",
    "SUBTREE_MAX_LIMIT",
    "Answer",
    "DrilldownAsker",
    "DrilldownClient",
    "MissingNode",
    "QueryRouter",
    "SubtreeAuditor",
    "SubtreeClient",
    "SubtreeCollector",
    "SubtreeOutcome",
    "SubtreeRouter",
    "SubtreeSearch",
    "SubtreeStats",
    "VerifiedPart",
    "Verifier",
    "VerifyResult",
    "answer_alerts",
    "answer_case_detail",
    "answer_cases",
    "answer_ranking",
    "answer_report",
    "answer_spot_check",
    "answer_summary",
    "build_query",
    "build_subtree_query",
    "check_subtree_request",
    "decode_resume",
    "encode_resume",
    "mask_name",
    "rank_entries",
    "recheck_moved",
    "replay",
    "replay_vectors",
    "rows_of",
    "search_subtree",
    "to_ms",
    "totals_differences",
    "vector",
    "verify_target",
]
