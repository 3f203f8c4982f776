"""Report servicer: SubmitReport (a child's signed report in, an ack out) and GetNodeInfo of NodeService."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from federation import (
    KeyResolver,
    Outbox,
    PermissionDeniedError,
    ReportReceiver,
    StaticKeyResolver,
    key_id,
    load_child_chains,
    raw_public_key,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.node_service_pb2 import NodeInfo, NodeInfoRequest
from federation.proto.v1.report_pb2 import ReportAck
from node.app import Node
from node.audit_log import ReceiptAuditor
from node.errors import SupnetError
from node.observability import software_version
from node.reporting import apply_child_reports, node_outbox, notice_child_refused
from node.trust import UNAUTHENTICATED_CALLER, Authorizer, caller_name, signing_identity

if TYPE_CHECKING:
    from node.observability import NodeMetrics

log = logging.getLogger(__name__)


def child_key_resolver(node: Node) -> StaticKeyResolver:
    """Children's report keys from the node config: the insecure plaintext mode (with PKI: certificate chains)."""
    return StaticKeyResolver.from_b64({child.id: child.public_key for child in node.config.federation.children})


class ReportServicer:
    """NodeService's GetNodeInfo and SubmitReport (node.server.grpc_server composes them with the drill-down Query).

    Errors are SupnetErrors mapped to gRPC statuses by the server's ErrorMappingInterceptor.
    """

    def __init__(
        self,
        node: Node,
        *,
        authorizer: Authorizer,
        key_resolver: KeyResolver | None = None,
        on_report_stored: Callable[[], None] | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.node = node
        self._metrics = metrics
        self._authorizer = authorizer
        registered = frozenset(child.id for child in node.config.federation.children)
        # A child refused again and again is audited once per cooldown, as operator notices are sent.
        self.audit = ReceiptAuditor(
            node.engine, cooldown_seconds=node.config.notifications.operator_notice_cooldown_seconds
        )
        if key_resolver is None:
            # With PKI, the key comes from the report's own certificate chain, verified by the authorizer first.
            trust = authorizer.trust
            key_resolver = trust.key_resolver if trust is not None else child_key_resolver(node)
        self.receiver = ReportReceiver(
            node.engine,
            children=registered,
            key_resolver=key_resolver,
            apply=apply_child_reports,
            clock=node.now,
            node_id=node.config.id,
            audit=self.audit,
            unix_clock_ms=self._unix_ms,
        )
        # e.g. ReportSender.notify_change: a child's new data changes this node's subtree too.
        self._on_report_stored = on_report_stored
        self._outbox: Outbox = node_outbox(node)

    def SubmitReport(self, request: SignedEnvelope, context: grpc.ServicerContext) -> ReportAck:  # noqa: N802
        """Verify, store and apply a child's report; the ack is returned only after the commit."""
        caller = UNAUTHENTICATED_CALLER  # the audit's actor: the verified peer, never the signer a report names
        try:
            try:
                peer = self._authorizer.peer(context)
                caller = caller_name(peer)
                self._authorizer.report(context, request, peer)
            except SupnetError as error:
                self.receiver.audit_refusal(request, error, caller)  # refused before the receiver: audited all the same
                raise
            try:
                ack, stored = self.receiver.receive_accepted(request, caller)  # audits its own refusals
            except SupnetError as error:
                self._notice_refusal(request, error)
                raise
        except SupnetError as error:
            if self._metrics is not None:
                self._metrics.report_refused(error.code)
            raise
        if self._metrics is not None:
            self._metrics.report_received(stored=ack.stored)
        # A heartbeat changes nothing above: reporting it upward would make every street's heartbeat a report
        # at each level up to the province (the scheduled report carries this node's freshness).
        if stored is not None and stored.changes_figures and self._on_report_stored is not None:
            try:
                self._on_report_stored()
            except Exception:
                # The report is stored and must be acknowledged; a failed hook only delays the next report.
                log.exception("on_report_stored hook failed after report %s #%s", ack.child_id, ack.sequence)
        return ack

    def _unix_ms(self) -> int:
        return int(self.node.now().replace(tzinfo=self.node.tz).timestamp() * 1000)

    def _notice_refusal(self, request: SignedEnvelope, error: SupnetError) -> None:
        # A refusal only the child's operator can fix (rewritten history, clock skew) is told to ours too.
        if request.signer_id in self.receiver_children:
            try:
                notice_child_refused(self.node, request.signer_id, error)
            except Exception:
                log.exception("could not queue the operator notice of %s's refused report", request.signer_id)

    @property
    def receiver_children(self) -> frozenset[str]:
        """The registered children (whose refusals may be noticed)."""
        return frozenset(child.id for child in self.node.config.federation.children)

    def GetNodeInfo(self, request: NodeInfoRequest, context: grpc.ServicerContext) -> NodeInfo:  # noqa: N802
        """Who this node is: id, level, parent, children, latest own report, report key; a child's head if asked."""
        peer = self._authorizer.node_info(context)
        config = self.node.config
        if request.child_id and (
            request.child_id not in self.receiver_children or (peer is not None and peer.node_id != request.child_id)
        ):
            raise PermissionDeniedError(
                f"only {request.child_id}, a registered child of {config.id}, may ask which of its reports "
                f"{config.id} holds"
            )
        with self.node.engine.connect() as conn:
            head = self._outbox.head(conn)
            child_head = load_child_chains(conn).get(request.child_id) if request.child_id else None
        info = NodeInfo(
            node_id=config.id,
            level=config.level,
            name=config.name,
            parent_id=config.parent_id,
            children_ids=sorted(child.id for child in config.federation.children),
            software_version=software_version(),
            latest_report_sequence=head.sequence if head else 0,
            latest_report_digest=head.digest if head else b"",
            server_time_ms=self._unix_ms(),
        )
        if child_head is not None:
            info.child_report_sequence = child_head.last_sequence
            info.child_report_digest = child_head.last_digest
        try:
            public_key = signing_identity(self.node).private_key.public_key()
        except SupnetError as error:
            log.warning("node %s has no usable report key: %s", config.id, error)
        else:
            info.public_key = raw_public_key(public_key)
            info.key_id = key_id(public_key)
        return info
