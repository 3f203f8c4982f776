"""Types of the server package's public API (loaded lazily by __init__.py)."""

from .enrolment_gate import ENROL_JOB_ID, ENROL_RECHECK_SECONDS, EnrolmentGate
from .enrolment_server import EnrolmentServer
from .grpc_server import DEFAULT_MAX_WORKERS, NodeServer
from .health import (
    HEALTH_INTERVAL_SECONDS,
    PROBE_STATES,
    REPORTS_SERVICE,
    HealthMonitor,
    HealthState,
    probe_health,
)
from .hosting import DEFAULT_JOB_WORKERS, DEFAULT_RPC_WORKERS, HOST_HEALTH_JOB_ID, START_STAGGER_SECONDS, NodeHost
from .scheduler import JobSpec, NodeScheduler
from .servicers import child_key_resolver
from .serving import ServingNode

__all__ = [
    "DEFAULT_JOB_WORKERS",
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_RPC_WORKERS",
    "ENROL_JOB_ID",
    "ENROL_RECHECK_SECONDS",
    "HEALTH_INTERVAL_SECONDS",
    "HOST_HEALTH_JOB_ID",
    "PROBE_STATES",
    "REPORTS_SERVICE",
    "START_STAGGER_SECONDS",
    "EnrolmentGate",
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
