"""``supnet demo`` finds its 15-node topology in the checkout (a move of the demo module once lost it)."""

from __future__ import annotations

from node.cli.federation_demo import DEFAULT_TOPOLOGY
from node.localtree import load_topology


def test_the_demo_topology_is_the_shipped_15_node_tree() -> None:
    assert DEFAULT_TOPOLOGY.is_file(), DEFAULT_TOPOLOGY
    topology = load_topology(DEFAULT_TOPOLOGY)
    assert len(topology.nodes) == 15
