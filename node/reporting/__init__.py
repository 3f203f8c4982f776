"""Reporting upward: build, sign and send reports of this node's subtree; apply the children's."""

from node.reporting.reports import (
    ReportSender,
    apply_child_reports,
    build_reports,
    check_children_staleness,
    node_outbox,
    outbox_overflow_count,
)
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
