"""Directives downward (docs/domain.md §8): 督办, 效能告诫书, 整改通知, 通报 — signed, delivered, answered, tracked.

``lifecycle``: the operator's actions (issue; acknowledge and respond at the target; close or reopen at the issuer).
``receive``: a message arriving at a hop (the Deliver servicer's helper). ``sender``: the outbox delivery loop of
``supnet serve``, which also runs ``deadlines`` (late responses: alert, notice, escalation, once each). ``history``:
the full signed history, verified. ``messages``/``events``/``store``: the wire bodies, their shared effects, the rows.
"""

from node.directives.deadlines import DeadlineResult, check_deadlines
from node.directives.history import DirectiveHistory, HistoryEntry, LatestResponse, directive_history, latest_responses
from node.directives.lifecycle import (
    IssueRequest,
    acknowledge,
    attachment_digest,
    close,
    directives,
    get_directive,
    issue,
    reopen,
    respond,
)
from node.directives.messages import (
    EVENT_LABELS,
    KIND_LABELS,
    KINDS,
    ROLE_LABELS,
    STATUS_LABELS,
    FindingDraft,
    from_ms,
    to_ms,
)
from node.directives.receive import DirectiveInbox, Receipt
from node.directives.sender import DirectiveSender, SendResult
from node.directives.store import DirectiveView, OutboxItem

__all__ = [
    "EVENT_LABELS",
    "KINDS",
    "KIND_LABELS",
    "ROLE_LABELS",
    "STATUS_LABELS",
    "DeadlineResult",
    "DirectiveHistory",
    "DirectiveInbox",
    "DirectiveSender",
    "DirectiveView",
    "FindingDraft",
    "HistoryEntry",
    "IssueRequest",
    "LatestResponse",
    "OutboxItem",
    "Receipt",
    "SendResult",
    "acknowledge",
    "attachment_digest",
    "check_deadlines",
    "close",
    "directive_history",
    "directives",
    "from_ms",
    "get_directive",
    "issue",
    "latest_responses",
    "reopen",
    "respond",
    "to_ms",
]
