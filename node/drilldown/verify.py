"""``supnet verify``: an ancestor checks a descendant's signed totals against its data, recursively.

For the target T (and then each node below it) the verifier, through drill-down queries:

1. authenticates T's latest report as held by T's parent P: a report of one of the verifier's own children
   is checked through the certificate chain it carries, up to the root (in the insecure plaintext mode:
   with the child's configured public key); a report further down is authenticated by its digest, which
   the (already authenticated) report of its parent names in ``child_reports``;
2. walks T's chain back to report #1 (``previous_digest`` links; the hash chain authenticates the history)
   and replays it — INCREMENTAL reports upsert their buckets, a FULL report replaces its day window — into
   T's *signed totals* per (day, item basic code, item type);
3. asks T for its own counters recomputed from its raw records, and fetches from T each child report its
   latest report rolled up (authenticated by digest), recursing into each child;
4. checks signed totals = own records + Σ children's signed totals, per day and per item, counter by counter;
5. checks that what T serves for each child (its stored child figures) equals that child's signed totals, so an
   edit at rest at T is caught even where T has not reported it.

Cohort gauges (open cases, open overdue) move with the clock between two reports, so a difference in them is
a warning, not a failure. A node whose data changed after its last report fails too: it has not yet
reported what it holds now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation import (
    COUNTER_FIELDS,
    IntegrityError,
    NotFoundError,
    SupnetError,
    UnauthenticatedError,
    parse_body,
    public_key_from_b64,
    replay_reports,
    report_digest,
    short_hex,
    verify_envelope,
)
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.app import Node
from node.drilldown.client import DrilldownClient
from node.trust import NodeTrust, node_trust

GAUGES = frozenset({"open_cases", "open_overdue_promised", "open_overdue_legal"})
MAX_DIFFERENCES_SHOWN = 5

BucketKey = tuple[str, str, str]
CounterDict = dict[str, int]


@dataclass(frozen=True)
class Finding:
    """One check on one node: passed, failed, or a warning that does not fail the verification."""

    node_id: str
    check: str
    ok: bool
    detail: str
    warning: bool = False


@dataclass
class VerifyResult:
    """Everything ``verify`` found, in the order it checked."""

    verifier_id: str
    target_id: str
    findings: list[Finding] = field(default_factory=list)
    nodes_checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return all(finding.ok or finding.warning for finding in self.findings)

    def add(self, node_id: str, check: str, ok: bool, detail: str, *, warning: bool = False) -> None:
        """Record one finding."""
        self.findings.append(Finding(node_id, check, ok, detail, warning))


def _counters(message: Counters) -> CounterDict:
    return {name: int(getattr(message, name)) for name in COUNTER_FIELDS}


def _add(into: CounterDict, values: Mapping[str, int]) -> None:
    for name in COUNTER_FIELDS:
        into[name] = into.get(name, 0) + int(values.get(name, 0))


def replay(history: Iterable[ReportBody]) -> dict[BucketKey, CounterDict]:
    """A node's signed state from its reports in order (federation.replay_reports)."""
    return replay_reports(history)


def _by(state: Mapping[BucketKey, CounterDict], position: int) -> dict[str, CounterDict]:
    grouped: dict[str, CounterDict] = {}
    for key, values in state.items():
        _add(grouped.setdefault(key[position], {}), values)
    return grouped


def _differences(signed: Mapping[str, CounterDict], expected: Mapping[str, CounterDict]) -> tuple[list[str], list[str]]:
    """(hard differences, gauge differences) as 'key counter: signed X, data Y' lines."""
    hard: list[str] = []
    gauges: list[str] = []
    for key in sorted(set(signed) | set(expected)):
        left, right = signed.get(key, {}), expected.get(key, {})
        for name in COUNTER_FIELDS:
            a, b = left.get(name, 0), right.get(name, 0)
            if a != b:
                line = f"{key} {name}: signed {a}, data {b}"
                (gauges if name in GAUGES else hard).append(line)
    return hard, gauges


def totals_differences(
    signed: Mapping[BucketKey, CounterDict],
    own_by_day: Mapping[str, CounterDict],
    own_by_item: Mapping[str, CounterDict],
    children_state: Mapping[BucketKey, CounterDict],
) -> tuple[list[str], list[str]]:
    """Check 4: a node's signed totals against its own records + its children's signed totals.

    ``own_by_day`` / ``own_by_item`` are the node's own counters recomputed from its raw records, keyed by
    ``YYYY-MM-DD`` day and by item basic code. Returns (hard differences, gauge differences) as
    'day|item key counter: signed X, data Y' lines; any hard difference fails the verification.
    """
    hard: list[str] = []
    gauges: list[str] = []
    for position, own, label in ((0, own_by_day, "day"), (1, own_by_item, "item")):
        expected = {key: dict(values) for key, values in own.items()}
        for key, values in _by(children_state, position).items():
            _add(expected.setdefault(key, {}), values)
        found_hard, found_gauges = _differences(_by(signed, position), expected)
        hard += [f"{label} {line}" for line in found_hard]
        gauges += [f"{label} {line}" for line in found_gauges]
    return hard, gauges


class Verifier:
    """Runs the checks through one drill-down client (the verifying node's local operator)."""

    def __init__(
        self,
        client: DrilldownClient,
        child_keys: Mapping[str, Ed25519PublicKey],
        trust: NodeTrust | None = None,
        children: Iterable[str] = (),
    ) -> None:
        """``trust``: check children's reports through their certificate chains (``children`` names them)."""
        self._client = client
        self._child_keys = dict(child_keys)
        self._trust = trust
        self._children = sorted(children) if trust is not None else sorted(self._child_keys)

    def _check_signature(self, envelope: SignedEnvelope, child_id: str) -> str:
        """Verify a child's report signature; returns how (for the finding)."""
        if self._trust is not None:
            try:
                self._trust.verify_envelope(envelope)
            except UnauthenticatedError:
                # A report signed before a key rotation: its chain was valid when it was made (revocation
                # still applies at any time).
                created = parse_body(envelope, ReportBody).created_at_ms
                if not created:
                    raise
                self._trust.verify_envelope(envelope, at=dt.datetime.fromtimestamp(created / 1000, dt.UTC))
            return "certificate chain verified up to the root"
        key = self._child_keys.get(child_id)
        if key is None:
            verifier_id = self._client.requester_id
            raise NotFoundError(f"{child_id} is not a configured child of {verifier_id} with a public key")
        verify_envelope(envelope, key)
        return "key from config"

    # --- fetching -------------------------------------------------------------------------------

    def _report(self, holder: str, node_id: str, sequence: int = 0) -> SignedEnvelope:
        answer = self._client.ask(holder, report=dd.ReportRequest(node_id=node_id, sequence=sequence))
        return answer.body.report.report

    def _own_from_records(self, node_id: str, group_by: dd.SummaryGroupBy.ValueType) -> dict[str, CounterDict]:
        request = dd.SummaryRequest(group_by=group_by, own_from_records=True)
        rows: dict[str, CounterDict] = {}
        for answer in self._client.ask_pages(node_id, summary=request):
            for row in answer.body.summary.rows:
                rows[row.key] = _counters(row.counters)
        return rows

    # --- checks ---------------------------------------------------------------------------------

    def verify(self, target_id: str) -> VerifyResult:
        """Verify target_id (this node or a descendant) and everything below it."""
        verifier_id = self._client.requester_id
        result = VerifyResult(verifier_id, target_id)
        try:
            if target_id == verifier_id:
                self._verify_children_of(result, verifier_id)
            else:
                holder, envelope = self._authenticate_path(result, verifier_id, target_id)
                self._verify_node(result, target_id, holder, envelope)
        except SupnetError as error:
            result.add(target_id, "reachable", False, f"[{error.code}] {error.message}")
        return result

    def _authenticate_path(self, result: VerifyResult, verifier_id: str, target_id: str) -> tuple[str, SignedEnvelope]:
        segments = target_id.split(".")
        depth = verifier_id.count(".") + 1
        first_child = ".".join(segments[: depth + 1])
        if self._trust is None and first_child not in self._child_keys:
            raise NotFoundError(f"{first_child} is not a configured child of {verifier_id} with a public key")
        envelope = self._report(verifier_id, first_child)
        how = self._check_signature(envelope, first_child)
        result.add(first_child, "signature", True, f"latest report signed by {first_child} ({how})")
        holder, current = verifier_id, first_child
        for length in range(depth + 2, len(segments) + 1):
            below = ".".join(segments[:length])
            body = parse_body(envelope, ReportBody)
            reference = next((ref for ref in body.child_reports if ref.child_id == below), None)
            if reference is None:
                raise IntegrityError(f"report {current} #{body.sequence} rolls up no report of {below}")
            envelope = self._report(current, below, reference.sequence)
            if report_digest(envelope) != reference.digest:
                raise IntegrityError(
                    f"report {below} #{reference.sequence} held by {current} has digest "
                    f"{short_hex(report_digest(envelope))}, but {current}'s signed report names "
                    f"{short_hex(reference.digest)}"
                )
            result.add(
                below, "authenticated", True, f"report #{reference.sequence} matches the digest {current} signed"
            )
            holder, current = current, below
        return holder, envelope

    def _history(
        self, result: VerifyResult, node_id: str, holder: str, head: SignedEnvelope
    ) -> list[ReportBody] | None:
        bodies = [parse_body(head, ReportBody)]
        envelope = head
        while bodies[-1].sequence > 1:
            body = bodies[-1]
            previous = self._report(holder, node_id, body.sequence - 1)
            if report_digest(previous) != body.previous_digest:
                result.add(
                    node_id,
                    "chain",
                    False,
                    f"report #{body.sequence} names previous digest {short_hex(body.previous_digest)}, but #"
                    f"{body.sequence - 1} held by {holder} has {short_hex(report_digest(previous))}",
                )
                return None
            envelope = previous
            bodies.append(parse_body(envelope, ReportBody))
        for body in bodies:
            if body.node_id != node_id:
                result.add(node_id, "chain", False, f"report #{body.sequence} is a report of {body.node_id}")
                return None
        bodies.reverse()
        result.add(node_id, "chain", True, f"reports #1..#{bodies[-1].sequence} form one unbroken hash chain")
        return bodies

    def _verify_node(
        self, result: VerifyResult, node_id: str, holder: str, head: SignedEnvelope
    ) -> dict[BucketKey, CounterDict] | None:
        result.nodes_checked.append(node_id)
        history = self._history(result, node_id, holder, head)
        if history is None:
            return None
        signed = replay(history)
        latest = history[-1]
        children_state: dict[BucketKey, CounterDict] = {}
        each_child: dict[str, dict[BucketKey, CounterDict]] = {}
        children_ok = True
        for reference in latest.child_reports:
            envelope = self._report(node_id, reference.child_id, reference.sequence)
            if report_digest(envelope) != reference.digest:
                result.add(
                    reference.child_id,
                    "authenticated",
                    False,
                    f"report #{reference.sequence} held by {node_id} has digest {short_hex(report_digest(envelope))}, "
                    f"but {node_id}'s report #{latest.sequence} names {short_hex(reference.digest)}",
                )
                children_ok = False
                continue
            child_state = self._verify_node(result, reference.child_id, node_id, envelope)
            if child_state is None:
                children_ok = False
                continue
            each_child[reference.child_id] = child_state
            for key, values in child_state.items():
                _add(children_state.setdefault(key, {}), values)
        if not children_ok:
            result.add(node_id, "totals", False, "not compared: a report below it failed its checks")
            return signed
        self._compare(result, node_id, latest, signed, children_state)
        if each_child:
            references = [(reference.child_id, reference.sequence) for reference in latest.child_reports]
            self._compare_served(result, node_id, references, each_child, f"{node_id}'s report #{latest.sequence}")
        return signed

    def _compare_served(
        self,
        result: VerifyResult,
        node_id: str,
        references: Sequence[tuple[str, int]],
        each_child: Mapping[str, Mapping[BucketKey, CounterDict]],
        since: str,
    ) -> None:
        """What node_id serves for each child (its stored child figures) = what that child's signed reports say.

        Stored child figures are plain rows at node_id: an edit at rest changes what it serves, not what it signed.
        """
        served: dict[str, CounterDict] = {}
        for answer in self._client.ask_pages(node_id, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)):
            for row in answer.body.summary.rows:
                served[row.key] = _counters(row.counters)
        wrong: list[str] = []
        moved_on: list[str] = []
        for child_id, sequence in references:
            if child_id not in each_child:
                continue
            held = parse_body(self._report(node_id, child_id), ReportBody)
            if held.sequence != sequence:
                moved_on.append(child_id)  # it reported since the state verified: not comparable
                continue
            signed_total: CounterDict = {}
            for values in each_child[child_id].values():
                _add(signed_total, values)
            shown = served.get(child_id, {})
            for name in COUNTER_FIELDS:
                if shown.get(name, 0) != signed_total.get(name, 0):
                    wrong.append(
                        f"{child_id} {name}: served {shown.get(name, 0)}, its signed reports say "
                        f"{signed_total.get(name, 0)}"
                    )
        if wrong:
            listed = "; ".join(wrong[:MAX_DIFFERENCES_SHOWN])
            more = f" (+{len(wrong) - MAX_DIFFERENCES_SHOWN} more)" if len(wrong) > MAX_DIFFERENCES_SHOWN else ""
            result.add(
                node_id,
                "served",
                False,
                f"child figures {node_id} serves ≠ its children's signed reports (edited at rest? run "
                f"`supnet metrics check` there): {listed}{more}",
            )
        else:
            compared = len([child for child, _ in references if child in each_child]) - len(moved_on)
            result.add(node_id, "served", True, f"child figures served = signed reports of {compared} child(ren)")
        if moved_on:
            result.add(
                node_id,
                "served",
                True,
                f"not compared for {', '.join(moved_on)}: reported since {since}",
                warning=True,
            )

    def _compare(
        self,
        result: VerifyResult,
        node_id: str,
        latest: ReportBody,
        signed: Mapping[BucketKey, CounterDict],
        children_state: Mapping[BucketKey, CounterDict],
    ) -> None:
        hard, gauges = totals_differences(
            signed,
            self._own_from_records(node_id, dd.SUMMARY_GROUP_BY_DAY),
            self._own_from_records(node_id, dd.SUMMARY_GROUP_BY_ITEM),
            children_state,
        )
        parts = f"own records + {len(latest.child_reports)} child report(s)"
        if hard:
            shown = "; ".join(hard[:MAX_DIFFERENCES_SHOWN])
            more = f" (+{len(hard) - MAX_DIFFERENCES_SHOWN} more)" if len(hard) > MAX_DIFFERENCES_SHOWN else ""
            result.add(node_id, "totals", False, f"signed totals of report #{latest.sequence} ≠ {parts}: {shown}{more}")
        else:
            result.add(node_id, "totals", True, f"signed totals of report #{latest.sequence} = {parts}")
        if gauges:
            result.add(
                node_id,
                "gauges",
                True,
                f"{len(gauges)} open-case gauge(s) moved since the report (clock-dependent): {gauges[0]}",
                warning=True,
            )

    def _verify_children_of(self, result: VerifyResult, node_id: str) -> None:
        each_child: dict[str, dict[BucketKey, CounterDict]] = {}
        references: list[tuple[str, int]] = []
        for child_id in self._children:
            try:
                envelope = self._report(node_id, child_id)
            except NotFoundError as error:
                result.add(child_id, "reported", False, error.message)
                continue
            how = self._check_signature(envelope, child_id)
            result.add(child_id, "signature", True, f"latest report signed by {child_id} ({how})")
            state = self._verify_node(result, child_id, node_id, envelope)
            if state is not None:
                each_child[child_id] = state
                references.append((child_id, parse_body(envelope, ReportBody).sequence))
        if each_child:
            self._compare_served(result, node_id, references, each_child, "this verification began")


def verify_target(node: Node, target_id: str, address: str | None = None) -> VerifyResult:
    """Verify target_id from this node (its local operator), through the node's running server."""
    keys = {
        child.id: public_key_from_b64(child.public_key) for child in node.config.federation.children if child.public_key
    }
    trust = node_trust(node)
    with DrilldownClient.for_node(node, address) as client:
        children = [child.id for child in node.config.federation.children]
        return Verifier(client, keys, trust, children).verify(target_id)
