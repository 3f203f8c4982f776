"""The node's gRPC server: NodeService (reports, info, drill-down), DirectiveService, IngestService, health, reflection.

Health is re-evaluated every few seconds (node.server.health: the database, the outbox, the revocation list);
the servicers count what they do in the node's metrics registry (node.observability).

Mutual TLS whenever the node has TLS credentials in ``pki/`` (client certificates required, verified up to
the root; see node.trust.tls); the only alternative is plaintext behind the explicit
``federation.insecure_plaintext`` switch, logged at WARNING on start. Neither: ConfigError, nothing served.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from federation import INGEST_SERVICE_NAME, NODE_SERVICE_NAME, ErrorMappingInterceptor, add_health_and_reflection
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.directive_pb2 import DESCRIPTOR as DIRECTIVE_DESCRIPTOR
from federation.proto.v1.directive_pb2_grpc import add_DirectiveServiceServicer_to_server
from federation.proto.v1.ingest_pb2_grpc import add_IngestServiceServicer_to_server
from federation.proto.v1.node_service_pb2 import NodeInfo, NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceServicer, add_NodeServiceServicer_to_server
from federation.proto.v1.report_pb2 import ReportAck
from node.app import Node
from node.errors import UnavailableError
from node.observability import NodeMetrics
from node.server.health import HEALTH_INTERVAL_SECONDS, HealthMonitor
from node.server.servicers import DirectiveServicer, IngestServicer, QueryServicer, ReportServicer
from node.trust import Authorizer, node_trust, register_local, unregister_local

if TYPE_CHECKING:
    from node.directives import DirectiveSender
    from node.reporting import ReportSender

log = logging.getLogger(__name__)

DIRECTIVE_SERVICE_NAME: str = DIRECTIVE_DESCRIPTOR.services_by_name["DirectiveService"].full_name
DEFAULT_MAX_WORKERS = 16
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # One port, one node: a second server on the same port must fail instead of sharing it.
    ("grpc.so_reuseport", 0),
]


class _NodeService(NodeServiceServicer):
    """NodeService assembled from the report servicer (node info, reports) and the query servicer."""

    def __init__(self, reports: ReportServicer, query: QueryServicer) -> None:
        self._reports = reports
        self._query = query

    def GetNodeInfo(self, request: NodeInfoRequest, context: grpc.ServicerContext) -> NodeInfo:  # noqa: N802
        return self._reports.GetNodeInfo(request, context)

    def SubmitReport(self, request: SignedEnvelope, context: grpc.ServicerContext) -> ReportAck:  # noqa: N802
        return self._reports.SubmitReport(request, context)

    def Query(self, request: SignedEnvelope, context: grpc.ServicerContext) -> SignedEnvelope:  # noqa: N802
        return self._query.Query(request, context)

    def QuerySubtree(  # noqa: N802
        self, request: SignedEnvelope, context: grpc.ServicerContext
    ) -> Iterator[SignedEnvelope]:
        return self._query.QuerySubtree(request, context)


class NodeServer:
    """One node's gRPC server; ``start()`` returns the bound port, ``stop(grace)`` drains it cleanly."""

    def __init__(
        self,
        node: Node,
        *,
        address: str | None = None,
        sender: ReportSender | None = None,
        directives: DirectiveSender | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        metrics: NodeMetrics | None = None,
        health_interval: float = HEALTH_INTERVAL_SECONDS,
        executor: futures.ThreadPoolExecutor | None = None,
        health_thread: bool = True,
        in_process: bool = False,
    ) -> None:
        """One node's server (``start()`` binds it).

        ``in_process``: a hosted node (node.server.hosting); while it serves, its parent (queries) and its children
        (reports) hosted by the same process call it in process (node.trust.local_calls) instead of over loopback TLS.
        """
        self.node = node
        # A registry per node: several nodes in one process (test trees) keep their counts apart.
        self.metrics = metrics or NodeMetrics(node)
        self.address = address or node.config.federation.listen
        self._sender = sender
        # A hosted node (node.server.hosting) runs its calls on the host's shared pool: threads stay bounded
        # however many nodes one process serves. The pool is then the host's to shut down, not ours.
        self._owns_executor = executor is None
        self._executor = executor or futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"rpc-{node.config.id}"
        )
        self._health_thread = health_thread
        # ConfigError here (no PKI, no plaintext switch) means the node refuses to serve at all.
        self.trust = node_trust(node)
        self.authorizer = Authorizer(node, self.trust)
        # The one place errors become gRPC statuses: the servicers only raise (federation.grpc_errors).
        self._server = grpc.server(self._executor, interceptors=[ErrorMappingInterceptor()], options=SERVER_OPTIONS)
        self.reports = ReportServicer(
            node, authorizer=self.authorizer, on_report_stored=self._data_changed, metrics=self.metrics
        )
        self.query = QueryServicer(node, authorizer=self.authorizer, metrics=self.metrics)
        self.ingest = IngestServicer(
            node, authorizer=self.authorizer, on_accepted=lambda _count: self._data_changed(), metrics=self.metrics
        )
        # A message queued for its next hop wakes the node's directive sender (supnet serve's; none: it waits).
        self.directives = DirectiveServicer(
            node, authorizer=self.authorizer, on_queued=directives.wake if directives is not None else None
        )
        self._node_service = _NodeService(self.reports, self.query)
        add_NodeServiceServicer_to_server(self._node_service, self._server)
        add_DirectiveServiceServicer_to_server(self.directives, self._server)
        add_IngestServiceServicer_to_server(self.ingest, self._server)  # type: ignore[arg-type]
        services = [NODE_SERVICE_NAME, DIRECTIVE_SERVICE_NAME, INGEST_SERVICE_NAME]
        self._health: Any = add_health_and_reflection(self._server, services)
        self.health = HealthMonitor(
            node, self._health, services=services, trust=self.trust, metrics=self.metrics, interval=health_interval
        )
        self.port = 0
        self._stopped = False
        self._in_process = in_process

    def _data_changed(self) -> None:
        # New local records or a child's new report change this node's subtree: report upward (debounced).
        if self._sender is not None:
            self._sender.notify_change()

    @property
    def bound_address(self) -> str:
        """host:port actually listened on (after start)."""
        host = self.address.rpartition(":")[0] or "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def mutual_tls(self) -> bool:
        """True when the server requires client certificates (False only in the insecure plaintext mode)."""
        return self.trust is not None

    def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with port 0)."""
        try:
            if self.trust is not None:
                self.port = self._server.add_secure_port(self.address, self.trust.server_credentials())
            else:
                log.warning(
                    "node %s serves WITHOUT TLS on %s (federation.insecure_plaintext): anyone who reaches the port "
                    "can submit, query and ingest; local experiments only",
                    self.node.config.id,
                    self.address,
                )
                self.port = self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise UnavailableError(f"node {self.node.config.id} cannot listen on {self.address}: {exc}") from exc
        if self.port == 0:
            raise UnavailableError(f"node {self.node.config.id} cannot listen on {self.address} (port in use?)")
        # The first answer already reflects the database, the outbox and the CRL; a hosted node's later checks
        # run as a job of the host's scheduler instead of a thread of their own.
        self.health.start(background=self._health_thread)
        self._server.start()
        if self._in_process:
            register_local(self.node.config.id, self.bound_address, self._node_service)
        log.info(
            "node %s serving on %s (%s)",
            self.node.config.id,
            self.bound_address,
            "mutual TLS" if self.trust is not None else "INSECURE PLAINTEXT",
        )
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Health goes NOT_SERVING first, then new calls are refused and in-flight calls get ``grace`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        if self._in_process:
            unregister_local(self.node.config.id, self._node_service)
        self._health.enter_graceful_shutdown()
        self.health.stop()
        self._server.stop(grace).wait()
        self.query.close()
        if self._owns_executor:
            self._executor.shutdown(wait=False)
        log.info("node %s stopped serving", self.node.config.id)
