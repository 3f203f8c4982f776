"""Benchmark: one subtree search (every red-card case of a 15-node tree) against asking the nodes one by one.

The tree (province → 2 cities → 4 districts → 8 streets) runs as separate processes started by the launcher
(``supnet serve`` per node, its own SQLite file, synthetic data), every call over mutual TLS.

* the subtree search: the province's operator signs one QuerySubtree; each hop authorizes it, answers its own
  rows in parts it signs and relays its children's streams (asked in parallel); the operator verifies every
  part through its signer's certificate chain and accounts for all 15 nodes;
* the baseline, measured in the same run: the same rows fetched with the ordinary drill-down, one signed query
  per node in turn (every page), each answer verified the same way — what a supervisor did before.

Both must return the same rows (checked every run). Also measured: the search with one street's process killed
(the answer must come back partial, naming it, well within the deadline).
Usage: python bench/subtree_query.py [--iterations 40] [--cases 200] [--deadline 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path, where bench/federation.py would shadow the federation package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federation.proto.v1 import drilldown_pb2 as dd
from node.app import open_node
from node.drilldown import DrilldownClient, SubtreeClient, rows_of
from node.localtree import FederationState, down, parse_topology, up

CITIES = ("gz", "sz")
DISTRICTS = ("a", "b")
STREETS = ("x", "y")
KILLED = "gd.sz.b.y"


def tree_ids() -> list[tuple[str, str]]:
    """(node id, level) of the 15-node tree, parents first."""
    nodes = [("gd", "province")]
    nodes += [(f"gd.{city}", "city") for city in CITIES]
    nodes += [(f"gd.{city}.{district}", "district") for city in CITIES for district in DISTRICTS]
    nodes += [
        (f"gd.{city}.{district}.{street}", "street") for city in CITIES for district in DISTRICTS for street in STREETS
    ]
    return nodes


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


def _time(call: Callable[[], object], iterations: int) -> list[float]:
    for _ in range(min(3, iterations)):
        call()  # warm-up: channels connected, chain caches filled
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def subtree_rows(client: SubtreeClient, deadline: float) -> tuple[list[str], Any]:
    """One subtree search of every red-card case; (case numbers, outcome)."""
    search = client.search("gd", deadline_seconds=deadline, cases=RED_CARDS)
    found = [row.case_no for verified in search.parts() for row in rows_of(verified.part)]
    return found, search.outcome


def node_by_node_rows(client: DrilldownClient, ids: list[str]) -> list[str]:
    """The same rows with the ordinary drill-down, one node after the other (every page)."""
    return [
        row.case_no
        for node_id in ids
        for answer in client.ask_pages(node_id, cases=RED_CARDS, page_size=1000)
        for row in answer.body.cases.cases
    ]


RED_CARDS = dd.CasesRequest(red_card_only=True)


def bench(state: FederationState, iterations: int, deadline: float) -> dict[str, Any]:
    ids = [node_id for node_id, _ in tree_ids()]
    address = state.node("gd").address
    root = open_node(Path(state.node("gd").data_dir), migrate_schema=False)
    try:
        # Both keep their channel and the chains they verified from one query to the next.
        with DrilldownClient.for_node(root, address) as client, SubtreeClient(root, address) as searcher:
            expected = sorted(node_by_node_rows(client, ids))
            found, outcome = subtree_rows(searcher, deadline)
            if sorted(found) != expected or not outcome.complete:
                raise SystemExit(f"subtree search differs from node-by-node drill-down: {outcome}")
            # Interleaved rounds, so both see the same load of this shared machine.
            subtree: list[float] = []
            baseline: list[float] = []
            for _ in range(max(1, iterations // 10)):
                subtree += _time(lambda: subtree_rows(searcher, deadline), 10)
                baseline += _time(lambda: node_by_node_rows(client, ids), 10)
            # One street killed: the answer is partial, names it, and comes back within the deadline.
            killed = state.node(KILLED)
            os.kill(killed.pid, signal.SIGKILL)
            time.sleep(0.2)
            started = time.perf_counter()
            _, partial = subtree_rows(searcher, deadline)
            partial_seconds = time.perf_counter() - started
        named = [missing.node_id for missing in partial.missing]
        if not partial.partial or named != [KILLED]:
            raise SystemExit(f"a killed street was not named missing: {partial}")
    finally:
        root.close()
    search_stats, baseline_stats = _percentiles(subtree), _percentiles(baseline)
    return {
        "nodes": len(ids),
        "rows": len(expected),
        "subtree_search": search_stats,
        "node_by_node": baseline_stats,
        "ratio_p50": round(search_stats["p50_ms"] / baseline_stats["p50_ms"], 3),
        "killed_street": {"node": KILLED, "seconds": round(partial_seconds, 3), "deadline_seconds": deadline},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--deadline", type=float, default=3.0)
    args = parser.parse_args()
    topology = parse_topology(
        {
            "name": "bench-15",
            "generate": {"cases": args.cases, "seed": 13, "from": "2026-01-05", "to": "2026-06-30"},
            "nodes": [{"id": node_id, "level": level} for node_id, level in tree_ids()],
        },
        "bench",
    )
    with tempfile.TemporaryDirectory(prefix="bench-subtree-") as directory:
        state = up(topology, Path(directory), workers=2, progress=lambda message: print(f"  {message}"))
        try:
            figures = bench(state, args.iterations, args.deadline)
        finally:
            down(Path(directory))
    search, baseline = figures["subtree_search"], figures["node_by_node"]
    print(
        f"red-card search over {figures['nodes']} nodes ({figures['rows']} rows): subtree search "
        f"p50 {search['p50_ms']:.1f} ms / p99 {search['p99_ms']:.1f} ms; node by node p50 "
        f"{baseline['p50_ms']:.1f} ms / p99 {baseline['p99_ms']:.1f} ms; ratio {figures['ratio_p50']:.2f}"
    )
    killed = figures["killed_street"]
    print(f"one street killed: partial answer naming {killed['node']} in {killed['seconds']:.2f} s")
    print(json.dumps({"benchmark": "subtree_query", "iterations": args.iterations, **figures}))


if __name__ == "__main__":
    main()
