"""``supnet verify`` over a real tree: an honest tree passes; a leaf altered after reporting, or a tampered stored
report, fails and the failure names where; asking many queries at once finds exactly what asking one at a time
finds; the one-recomputation own figures (by day and item) add up to the by-day and by-item ones."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from federation import COUNTER_FIELDS, InvalidArgumentError, serialize
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.app import Node
from node.cli import app
from node.cli.main import _register_commands
from node.drilldown import (
    DrilldownClient,
    Verifier,
    answer_report,
    answer_summary,
    recheck_moved,
    replay,
    replay_vectors,
    vector,
    verify_target,
)
from node.errors import ExitCode
from node.trust import node_trust
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
    # The verifier's own replay (counter lists, set counters only) gives the same state.
    assert replay_vectors([first, full, later]) == {key: vector(values) for key, values in state.items()}
    assert replay_vectors([first, later]) == {key: vector(values) for key, values in replay([first, later]).items()}


def test_many_queries_at_once_find_what_one_at_a_time_finds(tree: Tree) -> None:
    address = tree.nodes["gd"].address
    honest = verify_target(tree["gd"], "gd", address, concurrency=8)
    assert honest.ok, _failed(honest)
    assert honest.findings == verify_target(tree["gd"], "gd", address, concurrency=1).findings
    # A failure in the middle of the walk: the same findings in the same order, the same nodes checked.
    with deleted_rows(tree, "gd.gz.py.sq", "payments", 1):
        parallel = verify_target(tree["gd"], "gd", address, concurrency=8)
        sequential = verify_target(tree["gd"], "gd", address, concurrency=1)
    assert not parallel.ok
    assert list(_failed(parallel)) == ["gd.gz.py.sq"]
    assert parallel.findings == sequential.findings
    assert parallel.nodes_checked == sequential.nodes_checked == honest.nodes_checked


def _own_rows(node: Node, group_by: dd.SummaryGroupBy.ValueType) -> dict[str, dict[str, int]]:
    request = dd.SummaryRequest(group_by=group_by, own_from_records=True)
    answer, token = answer_summary(node, request, 5000, "", own_from_records=True)
    assert token == ""
    return {row.key: {name: int(getattr(row.counters, name)) for name in COUNTER_FIELDS} for row in answer.rows}


@pytest.mark.parametrize("node_id", ["gd.gz", LEAF])
def test_own_figures_by_day_and_item_add_up_to_by_day_and_to_by_item(tree: Tree, node_id: str) -> None:
    both = _own_rows(tree[node_id], dd.SUMMARY_GROUP_BY_DAY_ITEM)
    by_day: dict[str, dict[str, int]] = {}
    by_item: dict[str, dict[str, int]] = {}
    for key, values in both.items():
        day, _, basic_code = key.partition("|")
        for grouped, group in ((by_day, day), (by_item, basic_code)):
            total = grouped.setdefault(group, dict.fromkeys(COUNTER_FIELDS, 0))
            for name in COUNTER_FIELDS:
                total[name] += values[name]
    assert sum(values["received"] for values in both.values()) == CASES[node_id]
    assert by_day == _own_rows(tree[node_id], dd.SUMMARY_GROUP_BY_DAY)
    assert by_item == _own_rows(tree[node_id], dd.SUMMARY_GROUP_BY_ITEM)


def test_day_and_item_grouping_is_for_the_audit_recomputation_only(tree: Tree) -> None:
    request = dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_DAY_ITEM)
    with pytest.raises(InvalidArgumentError, match="recomputed from records"):
        answer_summary(tree[LEAF], request, 0, "")


def _sequences(envelopes: list[SignedEnvelope]) -> list[int]:
    return [ReportBody.FromString(envelope.body).sequence for envelope in envelopes]


def test_a_report_answer_carries_the_reports_before_it_down_to_a_gap(tree: Tree) -> None:
    tree.report_up()  # every node reports once more: the province holds two reports of its city at least
    holder, child = tree["gd"], "gd.gz"
    latest = answer_report(holder, dd.ReportRequest(node_id=child))[0].report
    top = ReportBody.FromString(latest.body).sequence
    assert top >= 2, "the city has reported more than once"
    whole = answer_report(holder, dd.ReportRequest(node_id=child, sequence=top, earlier=top - 1))[0]
    assert whole.report == latest
    assert _sequences(list(whole.earlier)) == list(range(top - 1, 0, -1))
    for envelope, sequence in zip(whole.earlier, range(top - 1, 0, -1), strict=True):
        assert envelope == answer_report(holder, dd.ReportRequest(node_id=child, sequence=sequence))[0].report
    assert len(answer_report(holder, dd.ReportRequest(node_id=child, sequence=top, earlier=1))[0].earlier) == 1
    assert not answer_report(holder, dd.ReportRequest(node_id=child, earlier=top))[0].earlier  # latest: alone
    # A report missing at the holder: the answer stops above it (verify then asks for it alone, and fails there).
    select = "SELECT * FROM federation_received_reports WHERE child_id = ? AND sequence = ?"
    with tree.nodes["gd"].db() as conn:
        row = conn.execute(select, (child, top - 1)).fetchone()
        conn.execute(select.replace("SELECT *", "DELETE"), (child, top - 1))
    try:
        gapped = answer_report(holder, dd.ReportRequest(node_id=child, sequence=top, earlier=top - 1))[0]
    finally:
        with tree.nodes["gd"].db() as conn:
            conn.execute(f"INSERT INTO federation_received_reports VALUES ({', '.join('?' * len(row))})", row)
    assert gapped.report == latest and not gapped.earlier
    # Histories of two reports and more, fetched with their heads: the chains check out, found as one at a time.
    whole_tree = verify_target(tree["gd"], "gd", tree.nodes["gd"].address)
    assert whole_tree.ok, _failed(whole_tree)
    chains = [f.detail for f in whole_tree.findings if f.check == "chain" and f.node_id == child]
    assert chains == [f"reports #1..#{top} form one unbroken hash chain"]
    assert whole_tree.findings == verify_target(tree["gd"], "gd", tree.nodes["gd"].address, concurrency=1).findings


def test_a_node_that_changed_while_verified_is_verified_again_once_it_reported(tree: Tree) -> None:
    # Last in the module: it adds cases to the leaf. A live tree keeps moving while it is verified: here the leaf
    # imports new cases (metric revision past its latest report) and reports only after the first look.
    province = tree["gd"]
    children = [child.id for child in province.config.federation.children]
    with DrilldownClient.for_node(province, tree.nodes["gd"].address) as client:
        verifier = Verifier(client, {}, node_trust(province), children)
        # Records edited at rest do not move the revision: that leaf fails, and is not looked at again.
        with deleted_rows(tree, LEAF, "evaluations", 2):
            tampered = verifier.verify("gd")
        assert list(_failed(tampered)) == [LEAF] and verifier.moved == {}
        assert recheck_moved(verifier, tampered, wait=5.0, sleep=_no_sleep) is tampered
        assert list(_failed(tampered)) == [LEAF]

        tree.import_synthetic(LEAF, cases=4, seed=77)
        first = verifier.verify("gd")
        failures = _failed(first)
        assert list(failures) == [LEAF] and "totals" in failures[LEAF][0], failures
        assert list(verifier.moved) == [LEAF]
        # Still not reported: after the wait it fails as before (and says it moved).
        recheck_moved(verifier, first, wait=0.5, pause=0.1)
        assert list(_failed(first)) == [LEAF]
        assert [f.node_id for f in first.findings if f.check == "moved"] == [LEAF]

        tree.report_up()
        second = verifier.verify("gd")  # a fresh look from the top passes now
        assert second.ok, _failed(second)
        tree.import_synthetic(LEAF, cases=2, seed=78)
        third = verifier.verify("gd")
        assert not third.ok and list(verifier.moved) == [LEAF]
        tree.report_up()
        recheck_moved(verifier, third, wait=10.0, pause=0.1)
        assert third.ok, _failed(third)
        moved = [finding for finding in third.findings if finding.check == "moved"]
        assert [(f.node_id, f.warning) for f in moved] == [(LEAF, True)]
        assert sorted(set(third.nodes_checked)) == sorted(set(CASES) - {"gd"})
    # Many moved at once: one more whole verification looks at them (here: more than 0 counts as many).
    with DrilldownClient.for_node(province, tree.nodes["gd"].address) as client:
        verifier = Verifier(client, {}, node_trust(province), children)
        tree.import_synthetic(LEAF, cases=1, seed=80)
        fourth = verifier.verify("gd")
        assert not fourth.ok and list(verifier.moved) == [LEAF]
        tree.report_up()
        recheck_moved(verifier, fourth, wait=10.0, pause=0.1, one_by_one=0)
        assert fourth.ok, _failed(fourth)
        assert [f.node_id for f in fourth.findings if f.check == "moved"] == [LEAF]
        assert sorted(set(fourth.nodes_checked)) == sorted(set(CASES) - {"gd"})
    # verify_target looks again by itself (0: not at all).
    tree.import_synthetic(LEAF, cases=1, seed=79)
    assert not verify_target(province, "gd", tree.nodes["gd"].address, recheck_wait=0).ok
    tree.report_up()
    assert verify_target(province, "gd", tree.nodes["gd"].address).ok


def _no_sleep(_seconds: float) -> None:
    raise AssertionError("a node that did not move is not waited for")
