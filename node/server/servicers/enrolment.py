"""EnrolmentService: a new child redeems its one-time token for certificates (thin: parse, redeem, record, answer)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from federation.proto.v1.enrolment_pb2 import EnrolRequest, EnrolResponse
from federation.proto.v1.enrolment_pb2_grpc import EnrolmentServiceServicer
from node.trust import EnrolmentAuthority, IssuedCertificates, request_from_message, response_message

log = logging.getLogger(__name__)


class EnrolmentServicer(EnrolmentServiceServicer):
    """Checks the proof, token and CSRs (EnrolmentAuthority), records the serials, returns the certificates.

    Errors are SupnetErrors mapped to gRPC statuses by the server's ErrorMappingInterceptor.
    """

    def __init__(self, authority: EnrolmentAuthority, on_issued: Callable[[IssuedCertificates], None]) -> None:
        self._authority = authority
        self._on_issued = on_issued

    def Enroll(self, request: EnrolRequest, context: grpc.ServicerContext) -> EnrolResponse:  # noqa: N802
        """Redeem the token proved by the request for the child's certificates."""
        proved = request_from_message(request)
        issued = self._authority.redeem_proof(proved.child_id, proved.request, proved.token_id, proved.proof)
        # Recorded before answering: a child must never hold certificates its parent cannot revoke.
        self._on_issued(issued)
        log.info("node %s enrolled %s (peer %s)", self._authority.authority.node_id, issued.child_id, context.peer())
        return response_message(issued)
