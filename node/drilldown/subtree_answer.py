"""The asker's side of a subtree search: send the signed query, verify every part as it streams in, account.

Every node of the subtree is accounted for: answered, missing (and why), or not read because of the limit.

Every envelope is verified here through its OWN signer's certificate chain up to the root (and this node's
revocation list); the signer's identity is the one the verified certificate names, never a field of the body.
A part must name its signer, answer this very query (digest) and lie in the searched subtree; a gap must be
signed by the missing node's parent. Anything else is rejected: its rows are dropped and its node counts as
missing, so a tampered answer never looks complete.

The rows are handed on part by part (:meth:`SubtreeSearch.parts`): the asker keeps only per-node bookkeeping,
not the subtree's rows. The outcome names every node that did not answer (completely) and why, and, for an
answer cut by its limit, where a next query continues.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from federation import (
    IntegrityError,
    SupnetError,
    UnauthenticatedError,
    envelope_digest,
    supnet_error_from_rpc,
)
from federation.proto.v1 import subtree_pb2 as st
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.app import Node
from node.drilldown.subtree_terms import (
    CUT_BODY_TYPE,
    DEFAULT_DEADLINE_SECONDS,
    GAP_BODY_TYPE,
    PART_BODY_TYPE,
    build_subtree_query,
    row_count,
)
from node.run_state import local_server_address
from node.trust import DEFAULT_CHANNEL_OPTIONS, NodeTrust, is_in_subtree, node_channel, signing_identity, transport_pki

__all__ = [
    "MissingNode",
    "SubtreeClient",
    "SubtreeCollector",
    "SubtreeOutcome",
    "SubtreeSearch",
    "VerifiedPart",
    "search_subtree",
]

REASON_NO_ANSWER = "no_answer"
REASON_REJECTED = "rejected"
REASON_BELOW_MISSING = "below_missing"


@dataclass(frozen=True)
class VerifiedPart:
    """One part whose signature was verified here through its signer's certificate chain."""

    part: st.SubtreePart
    envelope: SignedEnvelope

    @property
    def node_id(self) -> str:
        """The node whose own rows these are (the verified signer)."""
        return self.part.node_id


@dataclass(frozen=True)
class MissingNode:
    """A node (with whatever of its subtree did not arrive) missing from the answer, and why."""

    node_id: str
    reason: str
    detail: str = ""
    reported_by: str = ""


@dataclass
class SubtreeOutcome:
    """What the answer covers: complete only when every node answered in full and nothing was rejected."""

    target_id: str
    kind: str
    nodes_answered: int = 0
    rows: int = 0
    missing: list[MissingNode] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    cut: bool = False
    limit: int = 0
    unread: list[str] = field(default_factory=list)
    resume: st.SubtreeResume | None = None
    seconds: float = 0.0

    @property
    def partial(self) -> bool:
        """Some node did not answer in time, or a part was rejected: the rows are NOT the whole subtree's."""
        return bool(self.missing or self.rejected)

    @property
    def complete(self) -> bool:
        """Every node of the subtree answered in full and every part verified."""
        return not self.partial and not self.cut


@dataclass
class _NodeState:
    next_index: int = 0
    last: bool = False
    next_page_token: str = ""
    children: tuple[str, ...] | None = None


class SubtreeCollector:
    """Verifies the envelopes of one subtree answer as they arrive and accounts for every node."""

    def __init__(self, trust: NodeTrust, query: SignedEnvelope) -> None:
        self._trust = trust
        self._body = st.SubtreeQueryBody()
        self._body.ParseFromString(query.body)
        self._digest = envelope_digest(query)
        self._root = self._body.target_id
        self._requester = self._body.requester_id
        self._skipped = set(self._body.resume.done_subtrees)
        self._nodes: dict[str, _NodeState] = {}
        self._gaps: dict[str, MissingNode] = {}
        self._rejected: list[tuple[str, str]] = []
        self._cut_by: str = ""
        self._rows = 0

    def accept(self, envelope: SignedEnvelope) -> VerifiedPart | None:
        """The verified part with rows to use, or None (a gap, a cut, or a rejected envelope, recorded)."""
        try:
            return self._accept(envelope)
        except (SupnetError, DecodeError) as error:
            reason = error.message if isinstance(error, SupnetError) else f"body does not parse: {error}"
            self._rejected.append((envelope.signer_id or "?", reason))
            return None

    def _accept(self, envelope: SignedEnvelope) -> VerifiedPart | None:
        if not envelope.certificate_chain:
            raise UnauthenticatedError(f"{envelope.body_type or 'envelope'} of {envelope.signer_id} carries no chain")
        # Raises unless the signature verifies with the key of the certificate naming signer_id (chain to the root).
        self._trust.verify_envelope(envelope)
        signer = envelope.signer_id
        if envelope.body_type == PART_BODY_TYPE:
            part = st.SubtreePart()
            part.ParseFromString(envelope.body)
            self._bound(part.requester_id, part.query_digest, signer)
            if part.node_id != signer or not is_in_subtree(signer, self._root):
                raise IntegrityError(f"part of {part.node_id or '?'} signed by {signer} (searched: {self._root})")
            state = self._nodes.setdefault(signer, _NodeState())
            if state.last or part.part_index != state.next_index:
                raise IntegrityError(f"part {part.part_index} of {signer} out of order or repeated")
            state.next_index += 1
            state.last = part.last
            state.next_page_token = part.next_page_token
            state.children = tuple(part.children_ids)
            self._rows += row_count(part)
            return VerifiedPart(part, envelope)
        if envelope.body_type == GAP_BODY_TYPE:
            gap = st.SubtreeGap()
            gap.ParseFromString(envelope.body)
            self._bound(gap.requester_id, gap.query_digest, signer)
            # Reported by the missing node's parent, or by the node itself for its own rows (they could not be read).
            if gap.reported_by != signer or signer not in (gap.node_id.rpartition(".")[0], gap.node_id):
                raise IntegrityError(f"gap for {gap.node_id or '?'} signed by {signer}, not by it or its parent")
            if not is_in_subtree(gap.node_id, self._root):
                raise IntegrityError(f"gap for {gap.node_id} outside the searched subtree of {self._root}")
            self._gaps[gap.node_id] = MissingNode(gap.node_id, gap.reason, gap.detail, signer)
            return None
        if envelope.body_type == CUT_BODY_TYPE:
            cut = st.SubtreeCut()
            cut.ParseFromString(envelope.body)
            self._bound(cut.requester_id, cut.query_digest, signer)
            if cut.node_id != signer:
                raise IntegrityError(f"cut naming {cut.node_id or '?'} signed by {signer}")
            self._cut_by = self._cut_by or signer
            return None
        raise IntegrityError(f"{envelope.body_type or 'message'} is not part of a subtree answer")

    def _bound(self, requester_id: str, digest: bytes, signer: str) -> None:
        if requester_id != self._requester or digest != self._digest:
            raise IntegrityError(f"{signer} answers another query")

    # --- the outcome --------------------------------------------------------------------------------

    def _expected(self) -> list[str]:
        """Every node the answer should cover, as far as the verified parts tell (root first, then breadth)."""
        expected: list[str] = []
        todo = deque([self._root])
        seen: set[str] = set()
        while todo:
            node_id = todo.popleft()
            if node_id in seen or node_id in self._skipped:
                continue
            seen.add(node_id)
            expected.append(node_id)
            state = self._nodes.get(node_id)
            if state is not None and state.children is not None:
                todo.extend(state.children)
        return expected

    def _subtree_done(self, node_id: str, memo: dict[str, bool]) -> bool:
        if node_id in memo:
            return memo[node_id]
        state = self._nodes.get(node_id)
        done = node_id in self._skipped or (
            state is not None
            and state.last
            and not state.next_page_token
            and state.children is not None
            and all(self._subtree_done(child, memo) for child in state.children)
        )
        memo[node_id] = done
        return done

    def outcome(self, kind: str, error: str = "") -> SubtreeOutcome:
        """The accounting once the stream ended (``error``: why it ended early, if it did)."""
        result = SubtreeOutcome(
            target_id=self._root,
            kind=kind,
            rows=self._rows,
            rejected=list(self._rejected),
            cut=bool(self._cut_by),
            limit=self._body.limit,
        )
        result.nodes_answered = sum(1 for state in self._nodes.values() if state.last)
        rejected_signers = {signer for signer, _ in self._rejected}
        missing: dict[str, MissingNode] = dict(self._gaps)
        for node_id in self._expected():
            state = self._nodes.get(node_id)
            finished = state is not None and state.last
            if finished or node_id in missing:
                continue
            if node_id in rejected_signers:
                missing[node_id] = MissingNode(node_id, REASON_REJECTED, "a part failed verification here")
            elif result.cut:
                result.unread.append(node_id)
            else:
                below = next((gap for gap in self._gaps if is_in_subtree(node_id, gap)), "")
                if below:
                    missing[node_id] = MissingNode(node_id, REASON_BELOW_MISSING, f"below {below}")
                else:
                    missing[node_id] = MissingNode(node_id, REASON_NO_ANSWER, error or "the answer ended without it")
        result.missing = sorted(missing.values(), key=lambda item: item.node_id)
        if result.cut:
            result.resume = self._resume()
        return result

    def _resume(self) -> st.SubtreeResume:
        memo: dict[str, bool] = {}
        resume = st.SubtreeResume(done_subtrees=sorted(self._skipped))
        previous_done = set(self._body.resume.done_nodes)
        previous_cursors = {cursor.node_id: cursor.page_token for cursor in self._body.resume.cursors}
        # Every node heard from (also one whose parent's part did not come before the cut: its progress counts),
        # and every node the query this answers had progress for.
        for node_id in sorted({*self._expected(), *self._nodes, *previous_done, *previous_cursors}):
            parent = node_id.rpartition(".")[0]
            if self._subtree_done(node_id, memo):
                if node_id == self._root or not self._subtree_done(parent, memo):
                    resume.done_subtrees.append(node_id)
                continue
            state = self._nodes.get(node_id)
            if state is None or state.next_index == 0:
                # Not heard from before this cut: where the query this answers left it still holds.
                if node_id in previous_done:
                    resume.done_nodes.append(node_id)
                elif node_id in previous_cursors:
                    resume.cursors.add(node_id=node_id, page_token=previous_cursors[node_id])
                continue
            if state.next_page_token:
                resume.cursors.add(node_id=node_id, page_token=state.next_page_token)
            elif state.last:
                resume.done_nodes.append(node_id)
        return resume


class SubtreeSearch:
    """One subtree search in progress: iterate :meth:`parts`, then read :attr:`outcome`."""

    def __init__(self, call: Any, collector: SubtreeCollector, kind: str, address: str) -> None:
        self._call = call
        self.on_end: Callable[[], None] | None = None  # e.g. closing a client opened for this search alone
        self._collector = collector
        self._kind = kind
        self._address = address
        self._started = time.perf_counter()
        self.outcome: SubtreeOutcome | None = None

    def parts(self) -> Iterator[VerifiedPart]:
        """Verified parts with rows, as they arrive; :attr:`outcome` is set when the stream has ended."""
        error = ""
        received = 0
        try:
            for envelope in self._call:
                received += 1
                verified = self._collector.accept(envelope)
                if verified is not None:
                    yield verified
        except grpc.RpcError as exc:
            failure = supnet_error_from_rpc(exc, self._address)
            call: grpc.Call = exc  # type: ignore[assignment]
            if received == 0 and call.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise failure from exc  # refused outright (authorization, arguments, server down): no answer at all
            error = failure.message
        finally:
            self._call.cancel()
            if self.on_end is not None:
                self.on_end()
        self.outcome = self._collector.outcome(self._kind, error)
        self.outcome.seconds = time.perf_counter() - self._started


class SubtreeClient:
    """Subtree searches as ``node``'s local operator through its own server (mutual TLS).

    Keeps its channel and the chains it verified between searches.
    """

    def __init__(self, node: Node, address: str | None = None) -> None:
        """UnauthenticatedError in the insecure plaintext mode (parts are verified through certificate chains)."""
        pki = transport_pki(node)
        if pki is None:
            raise UnauthenticatedError(
                f"node {node.config.id} runs without certificates (insecure plaintext mode): a subtree search "
                "verifies every part through certificate chains"
            )
        self._node_id = node.config.id
        self._identity = signing_identity(node)
        self._trust = NodeTrust(pki)
        self.address = address or local_server_address(node.data_dir)
        self._channel = node_channel(pki, self.address, node.config.id, options=DEFAULT_CHANNEL_OPTIONS)
        self._stub = NodeServiceStub(self._channel)

    def search(
        self,
        target_id: str,
        *,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        limit: int = 0,
        page_size: int = 0,
        resume: st.SubtreeResume | None = None,
        **request: object,
    ) -> SubtreeSearch:
        """Start one search (``request``: one of cases=, alerts=, complaints=, directives=, ranking=)."""
        query = build_subtree_query(
            self._identity.private_key,
            self._node_id,
            target_id,
            limit=limit,
            page_size=page_size,
            resume=resume,
            certificate_chain=self._identity.certificate_chain,
            **request,  # type: ignore[arg-type]
        )
        # The whole search's deadline: the entry hop gives its children a little less, and so on down.
        call = self._stub.QuerySubtree(query, timeout=deadline_seconds)
        return SubtreeSearch(call, SubtreeCollector(self._trust, query), next(iter(request)), self.address)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> SubtreeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def search_subtree(
    node: Node,
    target_id: str,
    *,
    address: str | None = None,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    limit: int = 0,
    page_size: int = 0,
    resume: st.SubtreeResume | None = None,
    **request: object,
) -> SubtreeSearch:
    """One search with a client of its own (closed when the search's parts have been read)."""
    client = SubtreeClient(node, address)
    try:
        search = client.search(
            target_id, deadline_seconds=deadline_seconds, limit=limit, page_size=page_size, resume=resume, **request
        )
    except BaseException:
        client.close()
        raise
    search.on_end = client.close
    return search
