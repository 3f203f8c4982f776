"""Directive servicer: DirectiveService.Deliver, a thin shell over node.trust.authorization and node.directives."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DirectiveAck
from federation.proto.v1.directive_pb2_grpc import DirectiveServiceServicer
from node.app import Node
from node.directives import DirectiveInbox
from node.errors import SupnetError
from node.trust import UNAUTHENTICATED_CALLER, Authorizer, caller_name


class DirectiveServicer(DirectiveServiceServicer):
    """Takes a directive or an event of one, for this node or for the next hop on its way.

    Errors are SupnetErrors mapped to gRPC statuses by the server's ErrorMappingInterceptor; every refusal is audited
    with the caller its verified certificate names. ``on_queued``: wake the node's DirectiveSender.
    """

    def __init__(self, node: Node, *, authorizer: Authorizer, on_queued: Callable[[], None] | None = None) -> None:
        self._authorizer = authorizer
        self.inbox = DirectiveInbox(node, authorizer.trust)
        self._on_queued = on_queued

    def Deliver(self, request: SignedEnvelope, context: grpc.ServicerContext) -> DirectiveAck:  # noqa: N802
        """Authorize, then store, apply and queue onward; the ack only after the commit."""
        caller = UNAUTHENTICATED_CALLER  # the audit's actor: the verified peer, never the signer a message names
        try:
            peer = self._authorizer.peer(context)
            caller = caller_name(peer)
            message = self._authorizer.directive(context, request, peer)
            receipt = self.inbox.receive(request, message, caller)
        except SupnetError as error:
            self.inbox.refused(request, caller, error)
            raise
        if receipt.queued and self._on_queued is not None:
            self._on_queued()
        return receipt.ack
