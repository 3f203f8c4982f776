"""Reporting upward: build, sign and send reports of this node's subtree; apply the children's.

reports (build + sign into the outbox), sender (deliver the outbox to the parent), children (apply children's
reports, their staleness check), subtree (the roll-up: own + children's buckets and activity counts, completeness,
freshness), catalogues (item-register figures: own, each child's latest, the subtree's), integrity (child figures
checked against the children's stored signed reports), month_rollup (each child's day buckets summed per month,
kept as reports arrive, and the sums over any range of days that read it), refusals (operator notices of refused
reports) and resync (a restored node continues its chain from its parent's head).
"""

from node.reporting.catalogues import (
    catalogue_from_message,
    catalogue_message,
    children_catalogues,
    subtree_catalogue,
)
from node.reporting.children import apply_child_reports, check_children_staleness
from node.reporting.integrity import ChildFiguresCheck, child_figures_differences
from node.reporting.month_rollup import child_sums, month_rollup_differences, refresh_child_months, split_period
from node.reporting.refusals import notice_child_refused, notice_refused_by_parent, resync_command
from node.reporting.reports import build_reports, node_outbox, outbox_overflow_count
from node.reporting.resync import RESYNC_ACTION, ResyncResult, parent_head, resync_reports
from node.reporting.sender import ReportSender, SendResult
from node.reporting.subtree import (
    ActivityTotals,
    ChildStatus,
    SubtreeView,
    children_status,
    subtree_activity,
    subtree_buckets,
    subtree_completeness,
    subtree_view,
)

__all__ = [
    "RESYNC_ACTION",
    "ActivityTotals",
    "ChildFiguresCheck",
    "ChildStatus",
    "ReportSender",
    "ResyncResult",
    "SendResult",
    "SubtreeView",
    "apply_child_reports",
    "build_reports",
    "catalogue_from_message",
    "catalogue_message",
    "check_children_staleness",
    "child_figures_differences",
    "child_sums",
    "children_catalogues",
    "children_status",
    "month_rollup_differences",
    "node_outbox",
    "notice_child_refused",
    "notice_refused_by_parent",
    "outbox_overflow_count",
    "parent_head",
    "refresh_child_months",
    "resync_command",
    "resync_reports",
    "split_period",
    "subtree_activity",
    "subtree_buckets",
    "subtree_catalogue",
    "subtree_completeness",
    "subtree_view",
]
