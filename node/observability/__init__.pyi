"""Types of the observability package's public API (loaded lazily by __init__.py)."""

from .collectors import NodeTableCollector
from .hosted import NODE_LABEL, HostedNodesCollector, hosted_registry
from .logs import (
    FORMAT_ENV,
    LEVEL_ENV,
    LOG_FORMATS,
    LogFormat,
    active_log_format,
    bind_node,
    configure_logging,
    set_log_format,
    unbind_node,
)
from .metrics import QUERY_KINDS, MetricsServer, NodeMetrics, query_kind
from .version import software_version

__all__ = [
    "FORMAT_ENV",
    "LEVEL_ENV",
    "LOG_FORMATS",
    "NODE_LABEL",
    "QUERY_KINDS",
    "HostedNodesCollector",
    "LogFormat",
    "MetricsServer",
    "NodeMetrics",
    "NodeTableCollector",
    "active_log_format",
    "bind_node",
    "configure_logging",
    "hosted_registry",
    "query_kind",
    "set_log_format",
    "software_version",
    "unbind_node",
]
