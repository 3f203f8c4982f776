"""Drill-down servicer: the Query method of NodeService, a thin shell over node.trust.authorization and the router."""

from __future__ import annotations

import grpc

from federation import RelayedRpcError
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.app import Node
from node.audit_log import DrilldownAuditor
from node.drilldown import QueryRouter
from node.errors import SupnetError
from node.trust import UNAUTHENTICATED_CALLER, Authorizer, caller_name


class QueryServicer:
    """Answers or forwards signed drill-down queries; downstream refusals pass up with their own status.

    Errors (SupnetError, RelayedRpcError) become gRPC statuses in the server's ErrorMappingInterceptor.
    """

    def __init__(self, node: Node, *, authorizer: Authorizer, router: QueryRouter | None = None) -> None:
        self._authorizer = authorizer
        self.router = router or QueryRouter(node, trust=authorizer.trust)
        self._audit = DrilldownAuditor(node.engine, node.config.id)
        self._node_id = node.config.id

    def Query(self, request: SignedEnvelope, context: grpc.ServicerContext) -> SignedEnvelope:  # noqa: N802
        """One query envelope in, the answering node's signed answer envelope out."""
        caller = UNAUTHENTICATED_CALLER  # the audit's actor: the verified peer, never the requester a query names
        try:
            peer = self._authorizer.peer(context)
            caller = caller_name(peer)
            body = self._authorizer.query(context, request, peer)
            answer = self.router.handle(request, body, context.time_remaining())
        except SupnetError as error:
            self._audit.refused(request, caller, error.code, error.message)
            raise
        except RelayedRpcError as relayed:
            self._audit.refused(request, caller, relayed.error_code or relayed.status.name, relayed.details)
            raise
        hop = "" if body.target_id == self._node_id else self.router.next_hop(body.target_id)
        self._audit.served(body, caller, answer, hop)
        return answer

    def close(self) -> None:
        """Release the channels to the children."""
        self.router.close()
