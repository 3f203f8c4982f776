"""``supnet verify`` over a real tree: an honest tree passes; a leaf altered after reporting, or a tampered stored
report, fails and the failure names where."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from federation import serialize
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.cli import app
from node.cli.main import _register_commands
from node.drilldown import replay, verify_target
from node.errors import ExitCode
from tests.harness.tree import Tree, running_tree

CASES = {"gd": 15, "gd.gz": 20, "gd.gz.py": 25, "gd.gz.py.sq": 40, "gd.gz.py.ds": 30}
LEAF = "gd.gz.py.ds"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    yield from running_tree(tmp_path_factory.mktemp("verify"), CASES)


@contextmanager
def deleted_rows(tree: Tree, node_id: str, table: str, count: int) -> Iterator[int]:
    """Delete rows behind supnet's back, then put them back exactly (the tree is shared by the module's tests)."""
    with tree.nodes[node_id].db() as conn:
        rows = conn.execute(f"SELECT * FROM {table} ORDER BY id LIMIT ?", (count,)).fetchall()
        conn.executemany(f"DELETE FROM {table} WHERE id = ?", [(row[0],) for row in rows])
    try:
        yield len(rows)
    finally:
        with tree.nodes[node_id].db() as conn:
            marks = ", ".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def _failed(result: object) -> dict[str, list[str]]:
    failures: dict[str, list[str]] = {}
    for finding in result.findings:  # type: ignore[attr-defined]
        if not finding.ok and not finding.warning:
            failures.setdefault(finding.node_id, []).append(f"{finding.check}: {finding.detail}")
    return failures


def test_honest_tree_verifies_from_the_root_and_from_the_middle(tree: Tree) -> None:
    result = verify_target(tree["gd"], LEAF, tree.nodes["gd"].address)
    assert result.ok, _failed(result)
    assert result.nodes_checked == [LEAF]
    checks = {(f.node_id, f.check) for f in result.findings if f.ok}
    assert {("gd.gz", "signature"), ("gd.gz.py", "authenticated"), (LEAF, "chain"), (LEAF, "totals")} <= checks

    whole = verify_target(tree["gd"], "gd", tree.nodes["gd"].address)
    assert whole.ok, _failed(whole)
    assert sorted(whole.nodes_checked) == sorted(set(CASES) - {"gd"})

    middle = verify_target(tree["gd.gz"], "gd.gz.py", tree.nodes["gd.gz"].address)
    assert middle.ok, _failed(middle)
    assert sorted(middle.nodes_checked) == ["gd.gz.py", "gd.gz.py.ds", "gd.gz.py.sq"]


def test_leaf_altered_after_reporting_fails_at_that_leaf(tree: Tree) -> None:
    with deleted_rows(tree, LEAF, "evaluations", 3) as deleted:
        assert deleted == 3
        result = verify_target(tree["gd"], "gd", tree.nodes["gd"].address)
    failures = _failed(result)
    assert not result.ok
    assert list(failures) == [LEAF], failures
    assert "totals" in failures[LEAF][0] and "ratings_" in failures[LEAF][0]


def test_tampered_stored_report_breaks_authentication(tree: Tree) -> None:
    # Someone rewrites the street's latest report as stored at its district, to lower a figure.
    with tree.nodes["gd.gz.py"].db() as conn:
        sequence, original = conn.execute(
            "SELECT sequence, envelope FROM federation_received_reports WHERE child_id = ? "
            "ORDER BY sequence DESC LIMIT 1",
            ("gd.gz.py.sq",),
        ).fetchone()
    envelope = SignedEnvelope.FromString(original)
    body = ReportBody.FromString(envelope.body)
    body.buckets[0].counters.received -= 1
    envelope.body = serialize(body)
    update = "UPDATE federation_received_reports SET envelope = ? WHERE child_id = ? AND sequence = ?"
    with tree.nodes["gd.gz.py"].db() as conn:
        conn.execute(update, (envelope.SerializeToString(), "gd.gz.py.sq", sequence))
    try:
        result = verify_target(tree["gd"], "gd.gz.py", tree.nodes["gd"].address)
    finally:
        with tree.nodes["gd.gz.py"].db() as conn:
            conn.execute(update, (original, "gd.gz.py.sq", sequence))
    failures = _failed(result)
    assert list(failures) == ["gd.gz.py.sq", "gd.gz.py"], failures
    assert "names" in failures["gd.gz.py.sq"][0] and "digest" in failures["gd.gz.py.sq"][0]
    assert verify_target(tree["gd"], "gd.gz.py", tree.nodes["gd"].address).ok


def test_verify_command_exits_verification_failed_and_names_the_failing_node(tree: Tree) -> None:
    _register_commands()
    runner = CliRunner()
    args = ["verify", "gd.gz", "--data-dir", str(tree["gd"].data_dir), "--address", tree.nodes["gd"].address, "--json"]
    honest = runner.invoke(app, args)
    assert honest.exit_code == 0, honest.output
    with deleted_rows(tree, "gd.gz.py.sq", "payments", 1):
        tampered = runner.invoke(app, args)
    assert tampered.exit_code == ExitCode.VERIFICATION_FAILED
    assert '"ok": false' in tampered.output and "gd.gz.py.sq" in tampered.output and "fees_" in tampered.output


def test_replay_applies_full_reports_as_window_replacement() -> None:
    from federation.proto.v1.report_pb2 import Bucket, ReportKind

    first = ReportBody(kind=ReportKind.REPORT_KIND_INCREMENTAL)
    first.buckets.add(day="2026-01-05", basic_code="A", item_type_code="01").counters.received = 3
    first.buckets.add(day="2026-02-01", basic_code="A", item_type_code="01").counters.received = 4
    full = ReportBody(kind=ReportKind.REPORT_KIND_FULL, window_start_day="2026-01-01", window_end_day="2026-01-31")
    later = ReportBody(kind=ReportKind.REPORT_KIND_INCREMENTAL, buckets=[Bucket(day="2026-02-01", basic_code="A")])
    later.buckets[0].item_type_code = "01"
    later.buckets[0].counters.received = 5
    state = replay([first, full, later])
    assert state == {("2026-02-01", "A", "01"): {**{k: 0 for k in state[("2026-02-01", "A", "01")]}, "received": 5}}
