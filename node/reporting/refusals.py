"""Refused reports an operator must act on: notices to the child's and to the parent's operators.

The outbox retries every refusal on its own; these (a rewritten history after a restore, a clock beyond the
tolerance, a broken chain) never heal by retrying, so the people who can fix them are told, naming the child and
the recovery (``supnet reports resync``, node.reporting.resync). A notice repeats at most once per cooldown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.errors import SupnetError
from node.notify import NoticeKind, notify_operators

if TYPE_CHECKING:
    from node.app import Node

# Refusals the child's operator must act on (anything else is retried by the outbox alone).
OPERATOR_REFUSALS = frozenset({"HISTORY_REWRITTEN", "CLOCK_SKEW", "INTEGRITY"})


def resync_command(node: Node) -> str:
    """The recovery command for this node, as the notices print it."""
    return f"supnet reports resync --data-dir {node.data_dir}"


def notice_refused_by_parent(node: Node, error: SupnetError) -> None:
    """Tell this node's operators that the parent refuses its reports for a reason they must fix."""
    if error.code not in OPERATOR_REFUSALS:
        return
    federation = node.config.federation
    parent = federation.parent_id or node.config.parent_id or "(parent)"
    if error.code == "CLOCK_SKEW":
        action = "Set this machine's clock right (NTP); the reports are retried and then accepted."
    else:
        action = (
            "This node's report history no longer matches what the parent holds (was its database restored from "
            f"a backup?). Run '{resync_command(node)}': it continues the chain from the parent's head and sends a "
            "full report of this node's data; then re-import any records lost since the backup."
        )
    notify_operators(
        node,
        NoticeKind.REPORT_REFUSED,
        parent,
        f"{parent} refuses this node's reports [{error.code}]",
        f"Node {node.config.id}: its parent {parent} at {federation.parent_address} refuses its reports: "
        f"[{error.code}] {error.message}. Nothing is lost: the reports stay in the outbox and the data in the "
        f"buckets. {action}",
    )


def notice_child_refused(node: Node, child_id: str, error: SupnetError) -> None:
    """Tell this node's operators that a child's reports are refused for a reason the child's operator must fix."""
    if error.code not in OPERATOR_REFUSALS:
        return
    if error.code == "CLOCK_SKEW":
        action = f"Ask the operators of {child_id} to set its clock right (NTP)."
    else:
        action = (
            f"{child_id}'s report history no longer matches what this node holds (restored from a backup?). Its "
            f"operators must run 'supnet reports resync --data-dir <its data dir>' on {child_id}: it continues "
            f"from the last report held here and sends a full report. Until then {child_id}'s figures here stay "
            "as last accepted."
        )
    notify_operators(
        node,
        NoticeKind.CHILD_REPORT_REFUSED,
        child_id,
        f"reports of {child_id} refused [{error.code}]",
        f"Node {node.config.id} refuses the reports of its child {child_id}: [{error.code}] {error.message}. {action}",
    )
