"""The serving node: what ``supnet serve`` runs (server, enrolment listener, sender, scheduler, web console)."""

from __future__ import annotations

from node.app import Node
from node.reporting import ReportSender
from node.server.enrolment_server import EnrolmentServer
from node.server.grpc_server import NodeServer
from node.server.scheduler import NodeScheduler
from node.supervision import rebuild_buckets_if_needed
from node.web import WebConsole


class ServingNode:
    """Everything ``supnet serve`` runs for one node: server, report sender, scheduler, web console; in order."""

    def __init__(self, node: Node, *, listen: str | None = None) -> None:
        self.node = node
        self.sender = ReportSender(node) if node.config.federation.parent_address else None
        self.server = NodeServer(node, address=listen, sender=self.sender)
        self.scheduler = NodeScheduler(node, sender=self.sender)
        # Only a node with a CA can enrol children; it writes its address to DATA_DIR/enrol.json.
        self.enrolment = EnrolmentServer.for_node(node)
        # The supervisor console (web.enabled); it drills down through this node's own server.
        self.web = WebConsole.for_node(node)

    def start(self) -> int:
        """Rebuild the metric buckets if an upgrade asked for it, start serving, then the sender loop and the jobs.

        Returns the bound port.
        """
        rebuild_buckets_if_needed(self.node)  # before any report: the next one carries the rebuilt buckets
        port = self.server.start()
        if self.enrolment is not None:
            self.enrolment.start()
        if self.sender is not None:
            self.sender.start()  # before the jobs: the report jobs only build, the sender's loop delivers
        self.scheduler.start()
        if self.web is not None:
            self.web.start(self.server.bound_address)
        return port

    def stop(self, grace: float) -> None:
        """Console first, health NOT_SERVING, drain in-flight calls, then stop the jobs (a running one finishes)."""
        if self.web is not None:
            self.web.stop()
        if self.enrolment is not None:
            self.enrolment.stop(grace)
        self.server.stop(grace)
        self.scheduler.stop(wait=True)
        if self.sender is not None:
            self.sender.stop()
