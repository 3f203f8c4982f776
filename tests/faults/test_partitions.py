"""Network partitions between random parent/child pairs of the 15-node tree while the streets import.

Every edge of the demo tree (config/topologies/demo-15.toml; CI a 7-node slice of it with every tier, see
``_ci_slice``) runs through a fault-injecting TCP proxy each way
(tests/faults/proxy.py): the child reports to its parent through one, the parent forwards drill-down queries to the
child through the other. Each cycle cuts one random edge — drop, blackhole, delay or reset — while a street imports,
heals it, and checks that the province's totals converge to the sum of every node's own records exactly, with every
report held once. After the last cycle every bucket, child figure, chain and audit log verifies.

CI makes a few cycles on the slice; by hand, the whole tree: ``pytest tests/faults/test_partitions.py --runs 100 -s``.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation import SupnetError
from federation.proto.v1 import drilldown_pb2 as dd
from node.app import open_node
from node.cli.federation_demo import DEFAULT_TOPOLOGY
from node.drilldown import DrilldownClient
from node.localtree import Topology, load_topology
from tests.faults.process_tree import ProcessTree, summary_line, windows
from tests.faults.proxy import MODES, FaultProxy

CI_RUNS = 4
SEED = 16_100
FAULTS = tuple(mode for mode in MODES if mode != "pass")


def _ci_slice(topology: Topology) -> set[str]:
    """Every tier, half the nodes: the province, each city, its first district and that district's first street.

    A cut edge still has streets below it and elsewhere, at every depth; each node started costs CI a process.
    """
    kept = {topology.root.id}
    for city in topology.children_of(topology.root.id):
        district = topology.children_of(city.id)[0]
        kept |= {city.id, district.id, topology.children_of(district.id)[0].id}
    return kept


@pytest.fixture
def tree(tmp_path: Path, runs: int) -> Iterator[tuple[ProcessTree, dict[str, tuple[FaultProxy, FaultProxy]]]]:
    topology = load_topology(DEFAULT_TOPOLOGY)
    kept = {node.id for node in topology.nodes} if runs else _ci_slice(topology)
    tree_nodes = [node for node in topology.nodes if node.id in kept]
    nodes = [(node.id, node.level) for node in tree_nodes]
    streets = [node.id for node in tree_nodes if node.level == "street"]
    count = max(runs or CI_RUNS, 1) // len(streets) * 2 + 4
    built = ProcessTree.start_tree(
        tmp_path / "tree", nodes, windows(count, days=7), cases_per_window=5, importers=streets
    )
    edges: dict[str, tuple[FaultProxy, FaultProxy]] = {}
    try:
        addresses = {launched.id: launched.address for launched in built.state.nodes}
        for node in tree_nodes[1:]:
            parent = node.parent_id
            edges[node.id] = (FaultProxy(addresses[parent], f"{node.id}→{parent}"), FaultProxy(addresses[node.id]))

        def via_proxies(values: dict[str, Any]) -> None:
            """Report to the parent through the edge's up proxy; reach each child through its down proxy."""
            federation = values["federation"]
            if federation["parent_address"]:
                federation["parent_address"] = edges[values["id"]][0].address
            for entry in federation["children"]:
                entry["address"] = edges[entry["id"]][1].address

        for node in tree_nodes:
            built.edit_config(node.id, via_proxies)
        for node in tree_nodes:
            built.kill(node.id)
            built.start(node.id)
        for node in tree_nodes:
            built.wait_serving(node.id, timeout=60)
        yield built, edges
    finally:
        built.stop_tree()
        for up, down in edges.values():
            up.close()
            down.close()


def _streets_below(tree: ProcessTree, node_id: str) -> list[str]:
    return [street for street in tree.chunks if street == node_id or street.startswith(node_id + ".")]


def test_partitions_heal_and_lose_nothing(
    tree: tuple[ProcessTree, dict[str, tuple[FaultProxy, FaultProxy]]], runs: int
) -> None:
    processes, edges = tree
    rng = random.Random(SEED)
    total = runs or CI_RUNS
    failures: list[str] = []
    injected = 0
    for run in range(1, total + 1):
        operations: Counter[str] = Counter()
        child = rng.choice(sorted(edges))
        mode = FAULTS[(run - 1) % len(FAULTS)] if run <= len(FAULTS) else rng.choice(FAULTS)
        up, down = edges[child]
        before = up.faults + down.faults
        up.set_mode(mode, delay_seconds=0.2)
        down.set_mode(mode, delay_seconds=0.2)
        # A street below the cut edge imports (its reports must wait), and one elsewhere (they must not).
        below = _streets_below(processes, child) or sorted(processes.chunks)
        for street in {rng.choice(below), rng.choice(sorted(processes.chunks))}:
            chunk = processes.next_chunk(street)
            if chunk is not None:
                processes.import_chunk(chunk)
                operations["imports"] += 1
        # A drill-down across the cut: refused or late, never wrong (answers are signed by the target).
        operations["queries"] += _query_across(processes, child)
        up.set_mode("pass")
        down.set_mode("pass")
        faults = up.faults + down.faults - before
        injected += faults > 0
        ok, differing = processes.converged()
        problems = ([] if ok else ["did not converge within 90 s"]) + processes.chain_problems()
        line = summary_line(run, f"{mode} on {child}↔parent ({faults} faults)", operations, problems, differing)
        print(line)
        if problems or differing:
            failures.append(line)
    problems = processes.invariants()
    print(f"{total} partition cycles, {injected} with faults acted on; final invariants: {problems or 'all hold'}")
    assert not failures, "\n".join(failures)
    assert not problems, problems
    assert injected >= total // 2, f"only {injected} of {total} cycles hit any traffic"


def _query_across(processes: ProcessTree, child: str) -> int:
    """Ask the province for a summary of ``child``'s subtree; a failure under a fault is expected, not an error."""
    root = processes.state.nodes[0]
    node = open_node(Path(root.data_dir), migrate_schema=False)
    try:
        client = DrilldownClient.for_node(node, root.address, timeout=2.0)
    finally:
        node.close()
    with client, contextlib.suppress(SupnetError):  # UNAVAILABLE / DEADLINE_EXCEEDED under the fault
        client.ask(child, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD))
    return 1
