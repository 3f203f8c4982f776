"""A whole supnet tree on one machine: the launcher behind ``supnet federation up`` and the demo."""

from node.localtree.launcher import down, ephemeral_port_floor, free_ports, is_our_server, status, up
from node.localtree.state import FederationState
from node.localtree.topology import Topology, load_topology, parse_topology

__all__ = [
    "FederationState",
    "Topology",
    "down",
    "ephemeral_port_floor",
    "free_ports",
    "is_our_server",
    "load_topology",
    "parse_topology",
    "status",
    "up",
]
