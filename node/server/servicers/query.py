"""Drill-down servicer: NodeService's Query and QuerySubtree, thin shells over the authorizer and the routers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError

from federation import RelayedRpcError
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.drilldown_pb2 import QueryBody
from node.app import Node
from node.audit_log import DrilldownAuditor
from node.drilldown import QueryRouter, SubtreeAuditor, SubtreeRouter, SubtreeStats, check_subtree_request
from node.errors import SupnetError
from node.trust import UNAUTHENTICATED_CALLER, Authorizer, caller_name, is_in_subtree

if TYPE_CHECKING:
    from node.observability import NodeMetrics


def _kind_of(envelope: SignedEnvelope) -> str:
    """The request kind a (possibly refused, possibly undecodable) query names; "" when it names none."""
    body = QueryBody()
    with contextlib.suppress(DecodeError):
        body.ParseFromString(envelope.body)
    return body.WhichOneof("request") or ""


class QueryServicer:
    """Answers or forwards signed drill-down queries; downstream refusals pass up with their own status.

    Errors (SupnetError, RelayedRpcError) become gRPC statuses in the server's ErrorMappingInterceptor.
    """

    def __init__(
        self,
        node: Node,
        *,
        authorizer: Authorizer,
        router: QueryRouter | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._authorizer = authorizer
        self.router = router or QueryRouter(node, trust=authorizer.trust)
        self.subtree = SubtreeRouter(node, self.router)
        self._audit = DrilldownAuditor(node.engine, node.config.id)
        self._subtree_audit = SubtreeAuditor(node)
        self._node_id = node.config.id
        self._metrics = metrics

    def _refused(self, request: SignedEnvelope, code: str, started: float) -> None:
        if self._metrics is not None:
            self._metrics.drilldown_refused(_kind_of(request), code, time.perf_counter() - started)

    def Query(self, request: SignedEnvelope, context: grpc.ServicerContext) -> SignedEnvelope:  # noqa: N802
        """One query envelope in, the answering node's signed answer envelope out."""
        started = time.perf_counter()
        caller = UNAUTHENTICATED_CALLER  # the audit's actor: the verified peer, never the requester a query names
        try:
            peer = self._authorizer.peer(context)
            caller = caller_name(peer)
            body = self._authorizer.query(context, request, peer)
            answer = self.router.handle(request, body, context.time_remaining())
        except SupnetError as error:
            self._audit.refused(request, caller, error.code, error.message)
            self._refused(request, error.code, started)
            raise
        except RelayedRpcError as relayed:
            code = relayed.error_code or relayed.status.name
            self._audit.refused(request, caller, code, relayed.details)
            self._refused(request, code, started)
            raise
        hop = "" if body.target_id == self._node_id else self.router.next_hop(body.target_id)
        self._audit.served(body, caller, answer, hop)
        if self._metrics is not None:
            kind = body.WhichOneof("request") or ""
            self._metrics.drilldown_served(kind, time.perf_counter() - started, forwarded=bool(hop))
        return answer

    def QuerySubtree(  # noqa: N802
        self, request: SignedEnvelope, context: grpc.ServicerContext
    ) -> Iterator[SignedEnvelope]:
        """One subtree query envelope in; this node's signed parts and its children's, relayed, streamed out."""
        started = time.perf_counter()
        caller = UNAUTHENTICATED_CALLER
        try:
            peer = self._authorizer.peer(context)
            caller = caller_name(peer)
            body = self._authorizer.subtree_query(context, request, peer)
            forwarded = not is_in_subtree(self._node_id, body.target_id)
            check_subtree_request(body)  # a request every node would refuse alike is refused here, at once
            children = len(self.subtree.children_to_ask(body))  # NotFoundError: no child on the way to the root
        except SupnetError as error:
            self._subtree_audit.refused(request, caller, error.code, error.message)
            if self._metrics is not None:
                self._metrics.drilldown_refused("subtree", error.code, time.perf_counter() - started)
            raise
        stats = SubtreeStats()

        def audit() -> None:
            self._subtree_audit.served(body, caller, forwarded=forwarded, children=children)

        yield from self.subtree.stream(
            request, body, context.time_remaining(), stats, on_cancel=context.add_callback, before_first=audit
        )
        if self._metrics is not None:
            self._metrics.drilldown_served("subtree", time.perf_counter() - started, forwarded=forwarded)

    def close(self) -> None:
        """Release the channels to the children."""
        self.router.close()
