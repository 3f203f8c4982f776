"""Drill-down servicer: the Query method of NodeService, a thin shell over node.authorization and the router."""

from __future__ import annotations

import grpc

from federation.grpc_errors import ERROR_CODE_METADATA_KEY, translate_errors
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.app import Node
from node.authorization import Authorizer
from node.drilldown.router import QueryRouter, RelayedRpcError


class QueryServicer:
    """Answers or forwards signed drill-down queries; downstream refusals pass up with their own status."""

    def __init__(self, node: Node, *, authorizer: Authorizer, router: QueryRouter | None = None) -> None:
        self._authorizer = authorizer
        self.router = router or QueryRouter(node, trust=authorizer.trust)

    @translate_errors
    def Query(self, request: SignedEnvelope, context: grpc.ServicerContext) -> SignedEnvelope:  # noqa: N802
        """One query envelope in, the answering node's signed answer envelope out."""
        body = self._authorizer.query(context, request)
        try:
            return self.router.handle(request, body, context.time_remaining())
        except RelayedRpcError as relayed:
            if relayed.error_code:
                context.set_trailing_metadata(((ERROR_CODE_METADATA_KEY, relayed.error_code),))
            context.abort(relayed.status, relayed.details)
            raise  # unreachable: abort raises

    def close(self) -> None:
        """Release the channels to the children."""
        self.router.close()
