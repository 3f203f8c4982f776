"""The audit hooks of the protocol: reports received (federation.receiver's ReceiptAudit) and drill-down queries.

The actor of every entry is the caller as the server verified it (node.trust.caller_name: the peer certificate's
node id), never a field of the request; what the request claims (its signer, its requester) is in the detail.
A child refused again and again (a bad chain, an unknown child, retrying at its backoff) gets one refusal entry
per (caller, signer, code, reason) per cooldown: ``RefusalThrottle`` counts the repeats in between, and the next
entry of that refusal, or the caller's next accepted report, says how many there were.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import DecodeError
from sqlalchemy import Connection, Engine, select

from federation import AuditResult, SupnetError
from federation.proto.v1.drilldown_pb2 import QueryBody
from federation.proto.v1.report_pb2 import ReportBody
from node.audit_log.chain import Action, AuditLog, PendingAuditEntry, audit_table, naive_utc, record_audits
from node.store import ACTOR_MAX

if TYPE_CHECKING:
    from federation import AcceptedReport
    from federation.proto.v1.common_pb2 import SignedEnvelope

log = logging.getLogger(__name__)

_c = audit_table.c

# The actor of a refusal when the receiver was not told who sent the report (called directly, not by the server).
UNVERIFIED_CALLER = "(unverified)"
# Refusal states kept at most: past it, the ones whose cooldown is over are forgotten first.
MAX_THROTTLED_REFUSALS = 10_000


@dataclass(slots=True)
class _Refusal:
    """One refusal's last entry (monotonic seconds) and the repeats since, not yet in the log."""

    recorded: float
    repeats: int = 0
    first_repeat: dt.datetime | None = None
    last_repeat: dt.datetime | None = None

    def summary(self) -> dict[str, Any]:
        assert self.first_repeat is not None and self.last_repeat is not None
        return {
            "count": self.repeats,
            "first_at": self.first_repeat.isoformat(timespec="seconds"),
            "last_at": self.last_repeat.isoformat(timespec="seconds"),
        }


class RefusalThrottle:
    """One audit entry per refusal key per ``cooldown_seconds``; the repeats in between are counted (thread-safe).

    A key is (caller, then what identifies the refusal: signer, code, reason). ``admit`` says whether to write an
    entry (with the repeats it stands for); ``resolved`` hands over and forgets a caller's uncounted repeats when
    it is accepted again, so its next refusal is news at once.
    """

    def __init__(self, cooldown_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._by_caller: dict[str, dict[tuple[str, ...], _Refusal]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def admit(self, caller: str, refusal: tuple[str, ...], at: dt.datetime) -> dict[str, Any] | None:
        """None: within the cooldown, counted. Else write the entry, with ``repeated`` if there were repeats."""
        now = self._clock()
        with self._lock:
            known = self._by_caller.setdefault(caller, {})
            state = known.get(refusal)
            if state is not None and now - state.recorded < self._cooldown:
                state.repeats += 1
                state.first_repeat = state.first_repeat or at
                state.last_repeat = at
                return None
            if state is None:
                self._size += 1
            known[refusal] = _Refusal(recorded=now)
            if self._size > MAX_THROTTLED_REFUSALS:
                self._forget_expired(now)
        return {"repeated": state.summary()} if state is not None and state.repeats else {}

    def resolved(self, caller: str) -> dict[str, Any] | None:
        """The repeats of ``caller``'s refusals not yet in the log (None if none); they are forgotten."""
        if not self._by_caller:  # the usual case, on the path of every accepted report
            return None
        with self._lock:
            known = self._by_caller.pop(caller, None)
            if not known:
                return None
            self._size -= len(known)
        repeated = [state for state in known.values() if state.repeats]
        if not repeated:
            return None
        return {
            "count": sum(state.repeats for state in repeated),
            "first_at": min(cast(dt.datetime, state.first_repeat) for state in repeated).isoformat(timespec="seconds"),
            "codes": sorted({refusal[1] for refusal, state in known.items() if state.repeats}),
        }

    def uncounted(self) -> int:
        """Repeats counted but in no entry yet (each will be in the next entry of its refusal, or its caller's)."""
        with self._lock:
            return sum(state.repeats for known in self._by_caller.values() for state in known.values())

    def _forget_expired(self, now: float) -> None:
        """Drop refusals whose cooldown is over (the lock is held): a flood of distinct ones must not grow memory."""
        lost = 0
        for caller in list(self._by_caller):
            known = self._by_caller[caller]
            for refusal in [key for key, state in known.items() if now - state.recorded >= self._cooldown]:
                lost += known.pop(refusal).repeats
                self._size -= 1
            if not known:
                del self._by_caller[caller]
        if lost:
            log.warning("audit: %s repeated report refusals dropped uncounted (over %s kinds)", lost, self._size)


class ReceiptAuditor:
    """federation.receiver's audit hook: a report accepted (in the storing transaction) or refused (own one).

    Refusals are throttled per (caller, signer, code, reason): one entry per ``cooldown_seconds``
    (node config ``notifications.operator_notice_cooldown_seconds``, as operator notices are).
    """

    def __init__(self, engine: Engine, *, cooldown_seconds: float = 3600.0) -> None:
        self._log = AuditLog(engine)
        self.throttle = RefusalThrottle(cooldown_seconds)

    def accepted_many(self, conn: Connection, reports: Sequence[AcceptedReport]) -> None:
        """Record stored reports, in order, inside the transaction that stores them (one append for all)."""
        entries = []
        for report in reports:
            detail: dict[str, Any] = {
                "sequence": report.body.sequence,
                "kind": report.kind,
                "buckets": len(report.body.buckets),
                "digest": report.digest.hex(),
            }
            # Refusals of this child counted but never written (it was fixed within a cooldown) are told here.
            # Lost if this transaction rolls back: a rare apply failure right after a refused child recovered.
            earlier = self.throttle.resolved(report.child_id)
            if earlier is not None:
                detail["refusals_not_logged"] = earlier
            entries.append(
                PendingAuditEntry(
                    actor=report.child_id,
                    action=Action.REPORT_ACCEPTED,
                    target=f"report:{report.child_id}#{report.body.sequence}",
                    detail=detail,
                    result=AuditResult.OK,
                )
            )
        record_audits(conn, entries)

    def refused(self, envelope: SignedEnvelope, error: SupnetError, caller: str = "") -> None:
        """Record a refused report: code and reason; the verified ``caller`` as actor, the claimed signer in detail."""
        actor = caller[:ACTOR_MAX] or UNVERIFIED_CALLER
        signer = envelope.signer_id[:ACTOR_MAX] or "(no signer)"
        at = dt.datetime.now(dt.UTC)
        admitted = self.throttle.admit(actor, (signer, error.code, error.message), at)
        if admitted is None:
            log.debug("report refusal by %s for %s within its cooldown: counted, not audited", actor, signer)
            return
        detail: dict[str, Any] = {"code": error.code, "reason": error.message, "body_bytes": len(envelope.body)}
        if signer != actor:
            detail["signer"] = signer
        target = f"report:{signer}"
        body = ReportBody()
        try:
            body.ParseFromString(envelope.body)
        except DecodeError:
            pass  # the refusal's reason says why; an undecodable body has no sequence to name
        else:
            target = f"report:{signer}#{body.sequence}"
            detail["sequence"] = body.sequence
            if body.node_id != envelope.signer_id:
                detail["claimed_node_id"] = body.node_id
        detail.update(admitted)
        self._log.record(
            actor=actor, action=Action.REPORT_REFUSED, target=target, detail=detail, result=AuditResult.REFUSED, at=at
        )


DRILLDOWN_ACTIONS = (Action.DRILLDOWN_SERVED, Action.DRILLDOWN_FORWARDED, Action.DRILLDOWN_REFUSED)


@dataclass(frozen=True, slots=True)
class AuditedQuery:
    """A drill-down query's nonce as the audit log remembers it (node.trust's replay cache is seeded with them).

    ``caller`` is the verified caller the entry names as its actor; None for an entry written before the actor
    was the caller (its actor was the requester then).
    """

    caller: str | None
    requester: str
    nonce: bytes
    at: dt.datetime  # UTC


def recent_query_nonces(engine: Engine, since: dt.datetime) -> list[AuditedQuery]:
    """Every drill-down query audited since ``since`` with a nonce: the replay cache's memory across restarts."""
    query = (
        select(_c.actor, _c.detail, _c.at)
        .where(_c.action.in_([str(action) for action in DRILLDOWN_ACTIONS]), _c.at >= naive_utc(since))
        .order_by(_c.seq)
    )
    found = []
    with engine.connect() as conn:
        for actor, detail_json, at in conn.execute(query):
            detail = json.loads(detail_json)
            nonce = detail.get("nonce")
            if not isinstance(nonce, str):
                continue
            requester = detail.get("requester")
            caller, requester = (actor, requester) if isinstance(requester, str) else (None, actor)
            with contextlib.suppress(ValueError):
                found.append(AuditedQuery(caller, requester, bytes.fromhex(nonce), at.replace(tzinfo=dt.UTC)))
    return found


class DrilldownAuditor:
    """The drill-down servicer's audit: every query served, forwarded or refused (who, what, when, size).

    The actor of every entry is the caller as its verified certificate names it (node.trust.caller_name), never a
    field of the query: the requester the query claims is in the detail (``requester``, and ``signer`` when the
    envelope names another one), with the nonce, which seeds the replay cache after a restart.
    """

    def __init__(self, engine: Engine, node_id: str) -> None:
        self._log = AuditLog(engine)
        self._node_id = node_id

    def _record(
        self, action: str, body: QueryBody, caller: str, detail: dict[str, Any], result: str, *, signer: str = ""
    ) -> None:
        actor = caller[:ACTOR_MAX] or "(nobody)"
        detail = {
            "requester": body.requester_id,
            "query": body.WhichOneof("request") or "",
            "page_size": body.page_size,
            **detail,
        }
        if signer and signer != body.requester_id:
            detail["signer"] = signer
        if body.nonce:
            # Kept so a restarted node still refuses a replay within the freshness window (recent_query_nonces).
            detail["nonce"] = body.nonce.hex()
        try:
            self._log.record(
                actor=actor, action=action, target=body.target_id or self._node_id, detail=detail, result=result
            )
        except SupnetError:
            # The answer (or refusal) must not be lost to a failed audit write; the failure is loud in the log.
            log.exception("node %s could not audit %s by %s", self._node_id, action, actor)

    def served(self, body: QueryBody, caller: str, answer: SignedEnvelope, hop: str) -> None:
        """Answered here (hop empty) or relayed from the next node down (hop = that child)."""
        action = Action.DRILLDOWN_FORWARDED if hop else Action.DRILLDOWN_SERVED
        detail: dict[str, Any] = {"answer_bytes": len(answer.body), "answered_by": answer.signer_id}
        if hop:
            detail["via"] = hop
        self._record(action, body, caller, detail, AuditResult.OK)

    def refused(self, envelope: SignedEnvelope, caller: str, code: str, reason: str) -> None:
        """Refused here or by a node further down (code and reason as the caller sees them)."""
        # Refused before or after authorization parsed it: parse again here, off the served path.
        body = QueryBody()
        with contextlib.suppress(DecodeError):  # an undecodable query still names its claimed signer
            body.ParseFromString(envelope.body)
        detail = {"code": code, "reason": reason[:500]}
        self._record(Action.DRILLDOWN_REFUSED, body, caller, detail, AuditResult.REFUSED, signer=envelope.signer_id)
