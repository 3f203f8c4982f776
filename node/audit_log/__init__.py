"""The node's audit log: the hash-chained ``audit_log`` table and the hooks that write it.

``chain``: appending (inside the caller's transaction or in one of its own), listing and verifying entries.
``hooks``: what the report receiver and drill-down record, naming the verified caller as actor.
"""

from federation import AuditEntry, AuditHead, AuditResult
from node.audit_log.chain import (
    Action,
    AuditFilter,
    AuditLog,
    PendingAuditEntry,
    VerifyResult,
    operator_actor,
    parse_head,
    record_audit,
    record_audits,
    system_actor,
)
from node.audit_log.hooks import (
    AuditedQuery,
    DrilldownAuditor,
    ReceiptAuditor,
    RefusalThrottle,
    recent_query_nonces,
)

__all__ = [
    "Action",
    "AuditEntry",
    "AuditFilter",
    "AuditHead",
    "AuditLog",
    "AuditResult",
    "AuditedQuery",
    "DrilldownAuditor",
    "PendingAuditEntry",
    "ReceiptAuditor",
    "RefusalThrottle",
    "VerifyResult",
    "operator_actor",
    "parse_head",
    "recent_query_nonces",
    "record_audit",
    "record_audits",
    "system_actor",
]
