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
reported what it holds now. On a live tree that is mostly a node that changed while it was verified (a rule scan
raised cards): node.drilldown.verify_recheck verifies such a node again once it has reported.

Speed (a province is 1,786 nodes): the tree is fetched level by level, every answer a level needs asked at once
over one channel with at most ``concurrency`` queries in flight (each with the client's own deadline); the
checks then run in the order of a depth-first walk, so the findings and the first error that stops a
verification are those of a walk that asks one query at a time. A fetch's error is raised where that walk
would have asked it. The arithmetic is in node.drilldown.verify_figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation import (
    COUNTER_FIELDS,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    SupnetError,
    UnauthenticatedError,
    parse_body,
    report_digest,
    short_hex,
    verify_envelope,
)
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.drilldown.client import DrilldownClient
from node.drilldown.verify_figures import (
    GAUGES,
    SignedFigures,
    Vector,
    add_groups,
    add_into,
    grouped_differences,
    replay,
    replay_vectors,
    totals_differences,
)
from node.trust import NodeTrust

__all__ = ["GAUGES", "VERIFY_CONCURRENCY", "Finding", "Verifier", "VerifyResult", "replay", "totals_differences"]

MAX_DIFFERENCES_SHOWN = 5
# Queries in flight at once: enough to keep both cores of a host busy across the hops a query passes, few enough
# that the servers' call pools (16 at a lone node, 64 shared by a host's nodes) are never filled by one verify.
VERIFY_CONCURRENCY = 8
# Rows per page of the recomputed own figures: a node recomputes its records for every page it answers.
OWN_PAGE_SIZE = 5000

T = TypeVar("T")


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


class _Fetched(Generic[T]):
    """An answer fetched ahead of the checks: its value, or the error asking raised (raised again by ``get``)."""

    __slots__ = ("_error", "_value")

    def __init__(self, call: Callable[[], T]) -> None:
        self._value: T | None = None
        self._error: SupnetError | None = None
        try:
            self._value = call()
        except SupnetError as error:
            self._error = error

    @classmethod
    def of(cls, value: T) -> _Fetched[T]:
        """An answer that came with another one."""
        return cls(lambda: value)

    def get(self) -> T:
        """The value, or raise the error where the checks need it."""
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    @property
    def failed(self) -> bool:
        """True when asking raised."""
        return self._error is not None


@dataclass(frozen=True)
class _Own:
    """A node's own counters recomputed from its records (check 3), by day and by item basic code."""

    by_day: dict[str, Vector]
    by_item: dict[str, Vector]
    revision: int  # its metric revision after the recomputation (0: not told)


@dataclass(frozen=True)
class _Chain:
    """The outcome of walking a node's hash chain: its finding, and its reports #1..#N when unbroken."""

    finding: Finding
    bodies: list[ReportBody] | None


@dataclass
class _Visit:
    """One node to verify, with everything fetched for it (filled in when its level is fetched)."""

    node_id: str
    holder: str
    latest: ReportBody
    earlier: dict[int, _Fetched[SignedEnvelope]] = field(default_factory=dict)
    child_heads: list[_Fetched[SignedEnvelope]] = field(default_factory=list)
    own: _Fetched[_Own] | None = None
    served: _Fetched[dict[str, dd.SummaryRow]] | None = None
    chain: _Fetched[_Chain] | None = None
    children: list[_Visit | None] = field(default_factory=list)


def _body_or_none(envelope: SignedEnvelope) -> ReportBody | None:
    try:
        return parse_body(envelope, ReportBody)
    except SupnetError:
        return None


def _first(batch: _Fetched[list[SignedEnvelope]]) -> SignedEnvelope:
    return batch.get()[0]


def _counters(message: Counters) -> Vector:
    return [int(getattr(message, name)) for name in COUNTER_FIELDS]


def _listed(lines: Sequence[str]) -> str:
    shown = "; ".join(lines[:MAX_DIFFERENCES_SHOWN])
    more = f" (+{len(lines) - MAX_DIFFERENCES_SHOWN} more)" if len(lines) > MAX_DIFFERENCES_SHOWN else ""
    return f"{shown}{more}"


class Verifier:
    """Runs the checks through one drill-down client (the verifying node's local operator)."""

    def __init__(
        self,
        client: DrilldownClient,
        child_keys: Mapping[str, Ed25519PublicKey],
        trust: NodeTrust | None = None,
        children: Iterable[str] = (),
        *,
        concurrency: int = VERIFY_CONCURRENCY,
    ) -> None:
        """``trust``: check children's reports through their certificate chains (``children`` names them)."""
        self._client = client
        self._child_keys = dict(child_keys)
        self._trust = trust
        self._children = sorted(children) if trust is not None else sorted(self._child_keys)
        self._concurrency = max(1, concurrency)
        self._pool: ThreadPoolExecutor | None = None
        # Nodes whose totals differed while they held changes newer than their latest report (node id -> that
        # report's sequence): node.drilldown.verify_recheck verifies them again once they have reported.
        self.moved: dict[str, int] = {}

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

    def _reports(self, holder: str, node_id: str, sequence: int) -> list[SignedEnvelope]:
        """Reports #sequence, #sequence-1, ... as held by holder, as many as one answer carries (at least one)."""
        request = dd.ReportRequest(node_id=node_id, sequence=sequence, earlier=sequence - 1)
        answer = self._client.ask(holder, report=request).body.report
        return [answer.report, *answer.earlier]

    def _history(self, holder: str, node_id: str, top: int) -> dict[int, _Fetched[SignedEnvelope]]:
        """Reports #top..#1 as held by holder: in one answer where it carries them all, the rest one by one."""
        found: dict[int, _Fetched[SignedEnvelope]] = {}
        batch = _Fetched(partial(self._reports, holder, node_id, top))
        if not batch.failed:
            found = {top - offset: _Fetched.of(envelope) for offset, envelope in enumerate(batch.get())}
        for sequence in range(top, 0, -1):
            if sequence not in found:  # a node that does not send earlier reports, or a gap: asked alone
                found[sequence] = _Fetched(partial(self._report, holder, node_id, sequence))
        return found

    def _own_rows(
        self,
        node_id: str,
        group_by: dd.SummaryGroupBy.ValueType,
        page_size: int = 0,
        revisions: list[int] | None = None,
    ) -> Iterator[tuple[str, Vector]]:
        request = dd.SummaryRequest(group_by=group_by, own_from_records=True)
        for answer in self._client.ask_pages(node_id, page_size=page_size, summary=request):
            if revisions is not None:
                revisions.append(answer.body.summary.metric_revision)
            for row in answer.body.summary.rows:
                yield row.key, _counters(row.counters)

    def _own_from_records(self, node_id: str) -> _Own:
        """The node's own counters recomputed from its raw records, by day and by item basic code.

        One recomputation (rows by day and item, in as few pages as the node allows); a node that does not know
        that grouping yet is asked twice, by day and by item.
        """
        by_day: dict[str, Vector] = {}
        by_item: dict[str, Vector] = {}
        revisions: list[int] = []
        try:
            for key, values in self._own_rows(node_id, dd.SUMMARY_GROUP_BY_DAY_ITEM, OWN_PAGE_SIZE, revisions):
                day, _, basic_code = key.partition("|")
                add_into(by_day, day, values)
                add_into(by_item, basic_code, values)
        except InvalidArgumentError:
            by_day = dict(self._own_rows(node_id, dd.SUMMARY_GROUP_BY_DAY))
            by_item = dict(self._own_rows(node_id, dd.SUMMARY_GROUP_BY_ITEM))
        return _Own(by_day, by_item, max(revisions, default=0))

    def _served_rows(self, node_id: str) -> dict[str, dd.SummaryRow]:
        rows: dict[str, dd.SummaryRow] = {}
        for answer in self._client.ask_pages(node_id, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)):
            for row in answer.body.summary.rows:
                rows[row.key] = row
        return rows

    def _fetch_all(self, calls: Sequence[Callable[[], Any]]) -> list[_Fetched[Any]]:
        """Ask every call, at most ``concurrency`` at once; results in the order of ``calls``."""
        if self._pool is None or len(calls) <= 1:
            return [_Fetched(call) for call in calls]
        return list(self._pool.map(_Fetched, calls))

    def _fetch_level(self, visits: Sequence[_Visit]) -> list[_Visit]:
        """Fetch everything the checks of ``visits`` need, at once; returns the visits of the level below."""
        calls: list[Callable[[], Any]] = []
        for visit in visits:
            # Unless the head's answer brought them (a child's head is asked with its history).
            missing = [
                sequence for sequence in range(visit.latest.sequence - 1, 0, -1) if sequence not in visit.earlier
            ]
            calls.append(partial(self._history, visit.holder, visit.node_id, missing[0]) if missing else dict)
            references = visit.latest.child_reports
            calls += [partial(self._reports, visit.node_id, ref.child_id, ref.sequence) for ref in references]
            calls.append(partial(self._own_from_records, visit.node_id))
            if references:
                calls.append(partial(self._served_rows, visit.node_id))
        answers = iter(self._fetch_all(calls))
        below: list[_Visit] = []
        for visit in visits:
            history: _Fetched[dict[int, _Fetched[SignedEnvelope]]] = next(answers)
            visit.earlier.update(history.get())  # a job that keeps each report's own error: never raises
            references = visit.latest.child_reports
            batches: list[_Fetched[list[SignedEnvelope]]] = list(islice(answers, len(references)))
            visit.child_heads = [_Fetched(partial(_first, batch)) for batch in batches]
            visit.own = next(answers)
            visit.served = next(answers) if references else None
            visit.chain = _Fetched(partial(self._walk_chain, visit))
            visit.children = [None] * len(references)
            if visit.chain.failed or visit.chain.get().bodies is None:
                continue  # the checks stop at this node: nothing below it is asked
            for index, (reference, batch) in enumerate(zip(references, batches, strict=True)):
                if batch.failed or report_digest(batch.get()[0]) != reference.digest:
                    continue
                head, *earlier = batch.get()
                body = _body_or_none(head)
                if body is None:
                    continue  # the checks stop there (_check_node raises what parsing it raised)
                child = _Visit(reference.child_id, visit.node_id, body)
                child.earlier = {
                    reference.sequence - 1 - offset: _Fetched.of(envelope) for offset, envelope in enumerate(earlier)
                }
                visit.children[index] = child
                below.append(child)
        return below

    def _fetch_tree(self, top: Sequence[_Visit]) -> None:
        level = list(top)
        while level:
            level = self._fetch_level(level)

    # --- checks ---------------------------------------------------------------------------------

    def verify(self, target_id: str) -> VerifyResult:
        """Verify target_id (this node or a descendant) and everything below it."""
        verifier_id = self._client.requester_id
        result = VerifyResult(verifier_id, target_id)
        self.moved = {}
        with ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="verify") as pool:
            self._pool = pool
            try:
                if target_id == verifier_id:
                    self._verify_children_of(result, verifier_id)
                else:
                    holder, envelope = self._authenticate_path(result, verifier_id, target_id)
                    visit = _Visit(target_id, holder, parse_body(envelope, ReportBody))
                    self._fetch_tree([visit])
                    self._check_node(result, visit)
            except SupnetError as error:
                result.add(target_id, "reachable", False, f"[{error.code}] {error.message}")
            finally:
                self._pool = None
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

    def _earlier_report(self, visit: _Visit, sequence: int) -> SignedEnvelope:
        fetched = visit.earlier.get(sequence)
        if fetched is None:  # not a number the head's sequence led to (an odd body): asked now
            return self._report(visit.holder, visit.node_id, sequence)
        return fetched.get()

    def _walk_chain(self, visit: _Visit) -> _Chain:
        """Check 2: the node's reports back to #1, each naming the digest of the one before."""
        node_id, holder = visit.node_id, visit.holder
        bodies = [visit.latest]
        while bodies[-1].sequence > 1:
            body = bodies[-1]
            previous = self._earlier_report(visit, body.sequence - 1)
            if report_digest(previous) != body.previous_digest:
                detail = (
                    f"report #{body.sequence} names previous digest {short_hex(body.previous_digest)}, but #"
                    f"{body.sequence - 1} held by {holder} has {short_hex(report_digest(previous))}"
                )
                return _Chain(Finding(node_id, "chain", False, detail), None)
            bodies.append(parse_body(previous, ReportBody))
        for body in bodies:
            if body.node_id != node_id:
                return _Chain(
                    Finding(node_id, "chain", False, f"report #{body.sequence} is a report of {body.node_id}"), None
                )
        bodies.reverse()
        detail = f"reports #1..#{bodies[-1].sequence} form one unbroken hash chain"
        return _Chain(Finding(node_id, "chain", True, detail), bodies)

    def _check_node(self, result: VerifyResult, visit: _Visit) -> SignedFigures | None:
        """The checks of one fetched node and (first) of the nodes below it, in depth-first order."""
        node_id = visit.node_id
        result.nodes_checked.append(node_id)
        assert visit.chain is not None  # set when its level was fetched
        chain = visit.chain.get()
        result.findings.append(chain.finding)
        if chain.bodies is None:
            return None
        signed = SignedFigures.of_vectors(replay_vectors(chain.bodies))
        latest = visit.latest
        children_by_day: dict[str, Vector] = {}
        children_by_item: dict[str, Vector] = {}
        each_child: dict[str, SignedFigures] = {}
        children_ok = True
        for reference, head, child in zip(latest.child_reports, visit.child_heads, visit.children, strict=True):
            envelope = head.get()
            if child is None and report_digest(envelope) == reference.digest:
                result.nodes_checked.append(reference.child_id)
                parse_body(envelope, ReportBody)  # authenticated, but no report: raises (as the walk always did)
            if child is None or report_digest(envelope) != reference.digest:
                result.add(
                    reference.child_id,
                    "authenticated",
                    False,
                    f"report #{reference.sequence} held by {node_id} has digest {short_hex(report_digest(envelope))}, "
                    f"but {node_id}'s report #{latest.sequence} names {short_hex(reference.digest)}",
                )
                children_ok = False
                continue
            child_figures = self._check_node(result, child)
            if child_figures is None:
                children_ok = False
                continue
            each_child[reference.child_id] = child_figures
            add_groups(children_by_day, child_figures.by_day)
            add_groups(children_by_item, child_figures.by_item)
        if not children_ok:
            result.add(node_id, "totals", False, "not compared: a report below it failed its checks")
            return signed
        assert visit.own is not None
        own = visit.own.get()
        hard, gauges = grouped_differences(signed, own.by_day, own.by_item, children_by_day, children_by_item)
        if hard and own.revision > latest.up_to_revision:
            self.moved[node_id] = latest.sequence
        self._totals_findings(result, node_id, latest, hard, gauges)
        if each_child:
            assert visit.served is not None  # fetched for every node whose report rolls up children
            references = [(reference.child_id, reference.sequence) for reference in latest.child_reports]
            since = f"{node_id}'s report #{latest.sequence}"
            self._compare_served(
                result, node_id, visit.served.get(), references=references, each_child=each_child, since=since
            )
        return signed

    def _compare_served(
        self,
        result: VerifyResult,
        node_id: str,
        served: Mapping[str, dd.SummaryRow],
        *,
        references: Sequence[tuple[str, int]],
        each_child: Mapping[str, SignedFigures],
        since: str,
    ) -> None:
        """What node_id serves for each child (its stored child figures) = what that child's signed reports say.

        Stored child figures are plain rows at node_id: an edit at rest changes what it serves, not what it signed.
        A child is compared at the report the check verified: where the served row names another sequence, or
        its figures differ, the report node_id holds is asked, and a child that reported since is not compared.
        """
        wrong: list[str] = []
        moved_on: list[str] = []
        for child_id, sequence in references:
            if child_id not in each_child:
                continue
            row = served.get(child_id)
            shown = _counters(row.counters) if row is not None else [0] * len(COUNTER_FIELDS)
            signed_total = each_child[child_id].total
            if row is None or row.last_report_sequence != sequence or shown != signed_total:
                held = parse_body(self._report(node_id, child_id), ReportBody)
                if held.sequence != sequence:
                    moved_on.append(child_id)  # it reported since the state verified: not comparable
                    continue
            for name, served_value, signed_value in zip(COUNTER_FIELDS, shown, signed_total, strict=True):
                if served_value != signed_value:
                    wrong.append(f"{child_id} {name}: served {served_value}, its signed reports say {signed_value}")
        if wrong:
            result.add(
                node_id,
                "served",
                False,
                f"child figures {node_id} serves ≠ its children's signed reports (edited at rest? run "
                f"`supnet metrics check` there): {_listed(wrong)}",
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

    def _totals_findings(
        self, result: VerifyResult, node_id: str, latest: ReportBody, hard: Sequence[str], gauges: Sequence[str]
    ) -> None:
        parts = f"own records + {len(latest.child_reports)} child report(s)"
        if hard:
            detail = f"signed totals of report #{latest.sequence} ≠ {parts}: {_listed(hard)}"
            result.add(node_id, "totals", False, detail)
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
        heads = self._fetch_all([partial(self._report, node_id, child_id) for child_id in self._children])
        served = _Fetched(partial(self._served_rows, node_id)) if self._children else None
        # Fetched below only where the sequential checks would go on: a report there, its signature good.
        visits: list[_Visit | None] = []
        for child_id, head in zip(self._children, heads, strict=True):
            signed = not head.failed and not _Fetched(partial(self._check_signature, head.get(), child_id)).failed
            body = _body_or_none(head.get()) if signed else None
            visits.append(_Visit(child_id, node_id, body) if body is not None else None)
        self._fetch_tree([visit for visit in visits if visit is not None])
        each_child: dict[str, SignedFigures] = {}
        references: list[tuple[str, int]] = []
        for child_id, head, visit in zip(self._children, heads, visits, strict=True):
            try:
                envelope = head.get()
            except NotFoundError as error:
                result.add(child_id, "reported", False, error.message)
                continue
            how = self._check_signature(envelope, child_id)
            result.add(child_id, "signature", True, f"latest report signed by {child_id} ({how})")
            if visit is None:  # signed, yet no report: raises (as the walk always did)
                result.nodes_checked.append(child_id)
                parse_body(envelope, ReportBody)
            assert visit is not None
            figures = self._check_node(result, visit)
            if figures is not None:
                each_child[child_id] = figures
                references.append((child_id, visit.latest.sequence))
        if each_child:
            assert served is not None
            self._compare_served(
                result,
                node_id,
                served.get(),
                references=references,
                each_child=each_child,
                since="this verification began",
            )
