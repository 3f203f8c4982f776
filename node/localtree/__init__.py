"""A whole supnet tree on one machine: the launcher behind ``supnet federation up`` and the demo."""

from node.localtree.launcher import (
    cli_command,
    down,
    ephemeral_port_floor,
    free_ports,
    host_groups,
    is_our_server,
    provision_pki,
    serves,
    status,
    up,
)
from node.localtree.readiness import LaunchError, health_status, wait_until_serving
from node.localtree.state import FederationState, LaunchedNode
from node.localtree.topology import Topology, load_topology, parse_topology

__all__ = [
    "FederationState",
    "LaunchError",
    "LaunchedNode",
    "Topology",
    "cli_command",
    "down",
    "ephemeral_port_floor",
    "free_ports",
    "health_status",
    "host_groups",
    "is_our_server",
    "load_topology",
    "parse_topology",
    "provision_pki",
    "serves",
    "status",
    "up",
    "wait_until_serving",
]
