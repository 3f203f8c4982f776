"""Serving a node: the gRPC server and its servicers, health, the enrolment listener, the scheduler, ServingNode.

NodeHost: several nodes served by one process (node.server.hosting).
"""

from node.server.enrolment_server import EnrolmentServer
from node.server.grpc_server import DEFAULT_MAX_WORKERS, NodeServer
from node.server.health import (
    HEALTH_INTERVAL_SECONDS,
    PROBE_STATES,
    REPORTS_SERVICE,
    HealthMonitor,
    HealthState,
    probe_health,
)
from node.server.hosting import DEFAULT_JOB_WORKERS, DEFAULT_RPC_WORKERS, NodeHost
from node.server.scheduler import JobSpec, NodeScheduler
from node.server.servicers import child_key_resolver
from node.server.serving import ServingNode

__all__ = [
    "DEFAULT_JOB_WORKERS",
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_RPC_WORKERS",
    "HEALTH_INTERVAL_SECONDS",
    "PROBE_STATES",
    "REPORTS_SERVICE",
    "EnrolmentServer",
    "HealthMonitor",
    "HealthState",
    "JobSpec",
    "NodeHost",
    "NodeScheduler",
    "NodeServer",
    "ServingNode",
    "child_key_resolver",
    "probe_health",
]
