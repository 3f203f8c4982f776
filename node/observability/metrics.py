"""A node's Prometheus metrics: one registry per node, its event counters, and the plain-HTTP ``/metrics`` server.

Events (reports received or refused, drill-downs served or refused and how long they took, records streamed in
over gRPC) are counted where they happen, in the servicers of this process. Figures the database holds (outbox,
children, alerts, notifications, activity) are read at scrape time (node.observability.collectors). Each node
has a registry of its own, so several nodes in one process (the tests' trees) never mix their counts. Metric
names and labels are listed in README.md ("Metrics"); config/grafana/supnet.json charts them.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from federation.proto.v1.drilldown_pb2 import QueryBody
from node.domain import KIND_ORDER
from node.errors import UnavailableError
from node.observability.collectors import NodeTableCollector
from node.observability.version import software_version

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

# A "_created" timestamp series beside every counter only doubles what a scraper stores; none of ours needs it.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Drill-down kinds as QueryBody names them, and "subtree" (a QuerySubtree search, any kind); anything else (an
# undecodable query) is "unknown".
QUERY_KINDS: tuple[str, ...] = (
    *(field.name for field in QueryBody.DESCRIPTOR.oneofs_by_name["request"].fields),
    "subtree",
)
UNKNOWN_KIND = "unknown"
INGEST_OUTCOMES = ("accepted", "duplicate", "rejected")
# A drill-down is answered in milliseconds at one hop and in seconds across a slow tree.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NodeMetrics:
    """The registry of one node and the counters its servicers increment."""

    def __init__(self, node: Node, *, tables: bool = True) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.reports_received = Counter(
            "supnet_reports_received",
            "Child reports accepted; outcome stored, or duplicate (already stored: a re-delivery)",
            ["outcome"],
            registry=registry,
        )
        self.reports_refused = Counter(
            "supnet_reports_refused", "Child reports refused, by error code", ["reason"], registry=registry
        )
        self.drilldowns_served = Counter(
            "supnet_drilldowns_served",
            "Drill-down queries answered here (route answered) or relayed from a child (route forwarded)",
            ["kind", "route"],
            registry=registry,
        )
        self.drilldowns_refused = Counter(
            "supnet_drilldowns_refused",
            "Drill-down queries refused here or further down, by error code",
            ["kind", "code"],
            registry=registry,
        )
        self.drilldown_seconds = Histogram(
            "supnet_drilldown_duration_seconds",
            "Time to answer, relay or refuse a drill-down query at this node",
            ["kind", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.records_ingested = Counter(
            "supnet_ingest_records",
            "Records streamed in over gRPC ingest, by kind and outcome (accepted, duplicate, rejected)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.records_rejected = Counter(
            "supnet_ingest_rejected_records",
            "Records refused by gRPC ingest, by kind and reason",
            ["kind", "reason"],
            registry=registry,
        )
        self.health = Gauge(
            "supnet_health_serving",
            "1 while the node's gRPC health answers SERVING for this service name",
            ["service"],
            registry=registry,
        )
        build = Gauge(
            "supnet_build_info", "Software version and node id (always 1)", ["version", "node"], registry=registry
        )
        build.labels(software_version(), node.config.id).set(1)
        # Known label values start at 0, so a rate() works from the first event on.
        for outcome in ("stored", "duplicate"):
            self.reports_received.labels(outcome)
        for kind in QUERY_KINDS:
            for route in ("answered", "forwarded"):
                self.drilldowns_served.labels(kind, route)
        for kind in KIND_ORDER:
            for outcome in INGEST_OUTCOMES:
                self.records_ingested.labels(kind, outcome)
        if tables:
            registry.register(NodeTableCollector(node))

    def report_received(self, *, stored: bool) -> None:
        """A child's report was accepted (``stored`` False: already held, acknowledged again)."""
        self.reports_received.labels("stored" if stored else "duplicate").inc()

    def report_refused(self, code: str) -> None:
        """A child's report was refused with this error code."""
        self.reports_refused.labels(code).inc()

    def drilldown_served(self, kind: str, seconds: float, *, forwarded: bool) -> None:
        """A query answered here or relayed from the child on its path."""
        kind = query_kind(kind)
        self.drilldowns_served.labels(kind, "forwarded" if forwarded else "answered").inc()
        self.drilldown_seconds.labels(kind, "served").observe(seconds)

    def drilldown_refused(self, kind: str, code: str, seconds: float) -> None:
        """A query refused here, or by a node further down (its code passed up)."""
        kind = query_kind(kind)
        self.drilldowns_refused.labels(kind, code).inc()
        self.drilldown_seconds.labels(kind, "refused").observe(seconds)

    def record_ingested(self, kind: str, outcome: str, reason: str = "") -> None:
        """One record's outcome on the ingest stream (``reason`` of a rejected one)."""
        kind = kind if kind in KIND_ORDER else UNKNOWN_KIND
        self.records_ingested.labels(kind, outcome).inc()
        if outcome == "rejected":
            self.records_rejected.labels(kind, reason or "invalid").inc()


def query_kind(kind: str) -> str:
    """The label of a query kind: one of QueryBody's request kinds, else "unknown" (labels stay few)."""
    return kind if kind in QUERY_KINDS else UNKNOWN_KIND


def split_listen_address(address: str) -> tuple[str, int]:
    """("127.0.0.1", 9464) from "127.0.0.1:9464" ("::1" from "[::1]:9464"); validated by node.config."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsServer:
    """Plain HTTP serving a registry in the Prometheus text format; ``start()`` returns the port, ``stop()``.

    One per standalone node (its ``metrics.listen``), or one per host process for all its nodes (``owner`` and
    ``setting`` then name the host and its setting in the log line and in the error of an address it cannot take).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        address: str,
        *,
        node_id: str = "",
        owner: str = "",
        setting: str = "metrics.listen",
    ) -> None:
        self.registry = registry
        self.address = address
        self.node_id = node_id
        self.owner = owner
        self.setting = setting
        self.port = 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def bound_address(self) -> str:
        """host:port actually listened on (after start)."""
        return f"{self.address.rpartition(':')[0]}:{self.port}"

    def start(self) -> int:
        """Listen and serve in a daemon thread; UnavailableError naming the address if it cannot listen."""
        host, port = split_listen_address(self.address)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            owner = self.owner or self.node_id or "the node"
            raise UnavailableError(
                f"metrics of {owner} cannot listen on {self.address} ({self.setting}): {exc}"
            ) from exc
        self.port = int(self._server.server_address[1])
        log.info(
            "%s: Prometheus metrics on http://%s/metrics", self.owner or f"node {self.node_id}", self.bound_address
        )
        return self.port

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None
