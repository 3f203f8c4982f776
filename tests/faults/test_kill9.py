"""kill -9 at random points of the import → bucket → report build → outbox → send → receive → commit → ack cycle.

A tree of real processes over mutual TLS (``gd`` ← ``gd.a`` ← ``gd.a.x``, ``gd.a.y``; ``gd`` ← ``gd.b``). Each run
picks a crash point (federation.crash_points), a node of a tier where that point runs and the pass to die at, makes
the node (or its ``supnet import``) die there with SIGKILL while data flows, restarts it, and checks: the province's
totals equal the sum of every node's own records exactly, every report is held once by its parent and acknowledged,
and after the last run every bucket, child figure, report chain and audit log verifies.

CI makes a few runs; by hand: ``pytest tests/faults/test_kill9.py --runs 200 -s``.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation import CRASH_POINTS
from tests.faults.process_tree import ProcessTree, summary_line, windows

CI_RUNS = 8  # each crash point once
SEED = 16_009
NODES = [("gd", "province"), ("gd.a", "city"), ("gd.b", "city"), ("gd.a.x", "district"), ("gd.a.y", "district")]
IMPORTERS = ["gd.a", "gd.b", "gd.a.x", "gd.a.y"]  # the province has no data of its own here
WITH_PARENT = ["gd.a", "gd.b", "gd.a.x", "gd.a.y"]
WITH_CHILDREN = ["gd", "gd.a"]
LEAVES_BELOW = {"gd": ["gd.b", "gd.a.x", "gd.a.y"], "gd.a": ["gd.a.x", "gd.a.y"]}
CRASH_WAIT_SECONDS = 20.0


@pytest.fixture
def tree(tmp_path: Path, runs: int) -> Iterator[ProcessTree]:
    # Enough chunks for every run to bring new data (runs spread over four importers; spare for the feeding).
    count = max(runs or CI_RUNS, 1) // 2 + 4
    built = ProcessTree.start_tree(tmp_path / "tree", NODES, windows(count, days=4), cases_per_window=6)
    try:
        yield built
    finally:
        built.stop_tree()


def _feed(tree: ProcessTree, node_id: str, operations: Counter[str]) -> None:
    chunk = tree.next_chunk(node_id)
    if chunk is not None:
        tree.import_chunk(chunk)
        operations["imports"] += 1


def _serve_fault(tree: ProcessTree, rng: random.Random, point: str, operations: Counter[str]) -> str:
    """Restart a server with the crash point armed, drive data through it, wait for the kill, restart it clean."""
    node_id = rng.choice(WITH_CHILDREN if point.startswith("receive.") else WITH_PARENT)
    hit = rng.randint(1, 2)
    tree.kill(node_id)
    process = tree.start(node_id, f"{point}:{hit}")
    tree.wait_serving(node_id)  # False is fine: it may die at the point while starting up (its first report)
    feeders = LEAVES_BELOW.get(node_id, [node_id])
    for _ in range(hit + 1):
        if process.poll() is not None:
            break
        _feed(tree, rng.choice(feeders), operations)
        try:
            process.wait(timeout=CRASH_WAIT_SECONDS / (hit + 1))
        except subprocess.TimeoutExpired:
            continue  # still running: feed it more
    reached = process.poll() == -9
    tree.kill(node_id)
    tree.start(node_id)
    tree.wait_serving(node_id)
    operations["restarts"] += 1
    return f"kill -9 {node_id} at {point} (pass {hit}){'' if reached else ' [point not reached]'}"


def _import_fault(tree: ProcessTree, rng: random.Random, point: str, operations: Counter[str]) -> str:
    """An import dies at the point; the operator runs the same import again, which must complete it exactly."""
    node_id = rng.choice(IMPORTERS)
    chunk = tree.next_chunk(node_id)
    if chunk is None:
        return f"{node_id}: no data left to import"
    hit = rng.randint(1, 3)
    code = tree.import_chunk(chunk, f"{point}:{hit}")
    operations["imports"] += 1
    if code != 0:
        tree.import_chunk(chunk)  # the same files again: duplicates skipped, the rest stored
        operations["imports"] += 1
    return f"kill -9 import into {node_id} at {point} (pass {hit}){'' if code == -9 else ' [point not reached]'}"


def test_kill_minus_9_anywhere_loses_and_duplicates_nothing(tree: ProcessTree, runs: int) -> None:
    rng = random.Random(SEED)
    total = runs or CI_RUNS
    # Every point at least once before any repeats (CI covers the whole cycle), then at random.
    plan = [CRASH_POINTS[index % len(CRASH_POINTS)] for index in range(total)]
    rng.shuffle(plan)
    failures: list[str] = []
    reached = 0
    for run, point in enumerate(plan, start=1):
        operations: Counter[str] = Counter()
        if point.startswith("import."):
            fault = _import_fault(tree, rng, point, operations)
        else:
            fault = _serve_fault(tree, rng, point, operations)
        reached += "not reached" not in fault
        ok, differing = tree.converged()
        problems = [] if ok else ["did not converge within 90 s"]
        problems += tree.chain_problems()
        line = summary_line(run, fault, operations, problems, differing)
        print(line)
        if problems or differing:
            failures.append(line)
    problems = tree.invariants()
    print(f"{total} runs, {reached} faults injected at their point; final invariants: {problems or 'all hold'}")
    assert not failures, "\n".join(failures)
    assert not problems, problems
    assert reached >= total // 2, f"only {reached} of {total} runs reached their crash point"
