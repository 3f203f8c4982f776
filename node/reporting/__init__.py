"""Reporting upward: build, sign and send reports of this node's subtree; apply the children's.

reports (build + sign into the outbox), sender (deliver the outbox to the parent), children (apply children's
reports, their staleness check), subtree (the roll-up: own + children's buckets, completeness, freshness).
"""

from node.reporting.children import apply_child_reports, check_children_staleness
from node.reporting.reports import build_reports, node_outbox, outbox_overflow_count
from node.reporting.sender import ReportSender
from node.reporting.subtree import (
    ChildStatus,
    SubtreeView,
    children_status,
    subtree_buckets,
    subtree_completeness,
    subtree_view,
)

__all__ = [
    "ChildStatus",
    "ReportSender",
    "SubtreeView",
    "apply_child_reports",
    "build_reports",
    "check_children_staleness",
    "children_status",
    "node_outbox",
    "outbox_overflow_count",
    "subtree_buckets",
    "subtree_completeness",
    "subtree_view",
]
