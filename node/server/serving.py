"""The serving node: what ``supnet serve`` runs (server, enrolment, senders, scheduler, metrics, web console).

Besides the scheduler's jobs (node.server.scheduler), a node with children runs ``child_channels``: its channels to
the children connected ahead of the first drill-down (docs/architecture.md, "hosted nodes").
"""

from __future__ import annotations

from concurrent import futures

from apscheduler.schedulers.background import BackgroundScheduler

from node.app import Node
from node.directives import DirectiveSender
from node.observability import MetricsServer, NodeMetrics
from node.reporting import ReportSender
from node.server.enrolment_gate import ENROL_JOB_ID, ENROL_RECHECK_SECONDS, EnrolmentGate
from node.server.grpc_server import NodeServer
from node.server.scheduler import JobSpec, NodeScheduler
from node.supervision import rebuild_buckets_if_needed
from node.web import WebConsole

# How often the kept channels to the children are checked and re-opened (a restarted child, a dropped connection).
CHILD_CHANNELS_SECONDS = 60.0


class ServingNode:
    """Everything ``supnet serve`` runs for one node: server, report and directive senders, scheduler, console."""

    def __init__(
        self,
        node: Node,
        *,
        listen: str | None = None,
        executor: futures.ThreadPoolExecutor | None = None,
        scheduler: BackgroundScheduler | None = None,
        start_offset: float = 0.0,
        metrics_endpoint: bool = True,
        enrol_recheck_seconds: float = ENROL_RECHECK_SECONDS,
    ) -> None:
        """A standalone node by default; a hosted one (node.server.hosting) gets the host's pool and scheduler.

        A hosted node's calls run on ``executor`` and its jobs on ``scheduler``, each first run ``start_offset``
        seconds later than a standalone node's (the host spreads its nodes' start-up work); its health is evaluated
        by the host's one health job, and its metrics registry is served by the host's one endpoint
        (``metrics_endpoint`` False: no endpoint of its own on metrics.listen). Everything else (database, keys,
        certificates, port, senders, metrics registry) stays its own.

        ``enrol_recheck_seconds``: how often the enrolment gate looks for expired tokens (node.server.enrolment_gate).
        """
        self.node = node
        self.sender = ReportSender(node) if node.config.federation.parent_address else None
        # Directives go down from any node and their events up: every node delivers its directive outbox.
        self.directives = DirectiveSender(node)
        self.metrics = NodeMetrics(node)
        self.server = NodeServer(
            node,
            address=listen,
            sender=self.sender,
            directives=self.directives,
            metrics=self.metrics,
            executor=executor,
            health_thread=scheduler is None,
            in_process=scheduler is not None,
        )
        extra: tuple[JobSpec, ...] = ()
        if node.config.federation.children:
            # Connections to the children open at start, ahead of the first drill-down (QueryRouter.connect_children).
            router = self.server.query.router
            extra += (JobSpec("child_channels", router.connect_children, CHILD_CHANNELS_SECONDS, 0.0),)
        # Only a node with a CA can enrol children, and only while it holds a live token is its enrolment listener
        # open (its address then in DATA_DIR/enrol.json): idle listeners cost a host CPU.
        self.enrolment = EnrolmentGate.for_node(node, executor=executor)
        if self.enrolment is not None:
            extra += (JobSpec(ENROL_JOB_ID, self.enrolment.recheck, enrol_recheck_seconds),)
        self.scheduler = NodeScheduler(
            node, sender=self.sender, shared=scheduler, extra_jobs=extra, start_offset=start_offset
        )
        # Plain HTTP /metrics on metrics.listen (empty: none); a hosted node's registry is served by its host.
        listen_metrics = node.config.metrics.listen if metrics_endpoint else ""
        self.metrics_server = (
            MetricsServer(self.metrics.registry, listen_metrics, node_id=node.config.id) if listen_metrics else None
        )
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
        if self.metrics_server is not None:
            self.metrics_server.start()
        if self.sender is not None:
            self.sender.start()  # before the jobs: the report jobs only build, the sender's loop delivers
        self.directives.start()
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
        self.directives.stop()
        if self.sender is not None:
            self.sender.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
