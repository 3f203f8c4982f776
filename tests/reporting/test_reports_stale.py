"""Stale and missing children: shown as such, and counted against reporting completeness at every level."""

from __future__ import annotations

import json
import logging

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from federation import outbox_table, parse_body
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.cli import stats_cmd, subtree_cmd
from node.reporting import check_children_staleness, subtree_view
from tests.harness.tree import Tree

STALE_AFTER_SECONDS = 3 * 60.0  # stale_after_intervals × report_interval_seconds of the test tree


@pytest.fixture
def tree_ids() -> list[str]:
    # gd.gz.th never reports; gd.sz reports once and then goes silent.
    return ["gd", "gd.gz", "gd.gz.py", "gd.gz.th", "gd.sz"]


def _states(tree: Tree, node_id: str) -> dict[str, str]:
    return {child.child_id: child.state for child in subtree_view(tree[node_id]).children}


def _last_completeness(tree: Tree, node_id: str) -> tuple[int, int]:
    with tree[node_id].engine.connect() as conn:
        raw = conn.execute(
            select(outbox_table.c.envelope).order_by(outbox_table.c.sequence.desc()).limit(1)
        ).scalar_one()
    body = parse_body(SignedEnvelope.FromString(raw), ReportBody)
    return body.completeness.nodes_in_subtree, body.completeness.nodes_reported_in_window


def test_missing_and_stale_children_count_against_completeness(tree: Tree, caplog: pytest.LogCaptureFixture) -> None:
    tree.import_synthetic("gd.gz.py", cases=30, seed=1)
    for node_id in ["gd.gz.py", "gd.gz", "gd.sz"]:
        assert not tree.sender(node_id).report_now().failed

    # The city: one district fresh, one never heard of. It reports 3 nodes, 2 reporting.
    assert _states(tree, "gd.gz") == {"gd.gz.py": "fresh", "gd.gz.th": "missing"}
    assert _last_completeness(tree, "gd.gz") == (3, 2)
    province = subtree_view(tree["gd"])
    assert (province.completeness.nodes_in_subtree, province.completeness.nodes_reported_in_window) == (5, 4)

    # Time passes; only the city reports again (gd.sz has gone silent).
    tree.clock.advance(STALE_AFTER_SECONDS / 2)
    assert not tree.sender("gd.gz").report_now().failed
    tree.clock.advance(STALE_AFTER_SECONDS / 2 + 1)
    assert _states(tree, "gd") == {"gd.gz": "fresh", "gd.sz": "stale"}
    province = subtree_view(tree["gd"])
    assert (province.completeness.nodes_in_subtree, province.completeness.nodes_reported_in_window) == (5, 3)
    stale = next(child for child in province.children if child.child_id == "gd.sz")
    assert stale.last_sequence == 1 and stale.age_seconds is not None and stale.age_seconds > STALE_AFTER_SECONDS
    # gd.gz.py is stale at the city now too, so the city's next report says so, and the province sums it.
    assert _states(tree, "gd.gz")["gd.gz.py"] == "stale"
    assert not tree.sender("gd.gz").report_now().failed
    assert _last_completeness(tree, "gd.gz") == (3, 1)
    province = subtree_view(tree["gd"])
    assert (province.completeness.nodes_in_subtree, province.completeness.nodes_reported_in_window) == (5, 2)

    with caplog.at_level(logging.WARNING, logger="node.reporting.children"):
        statuses = check_children_staleness(tree["gd.gz"])
    assert {status.child_id: status.state for status in statuses} == {"gd.gz.py": "stale", "gd.gz.th": "missing"}
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "gd.gz.py" in messages and "stale" in messages and "gd.gz.th" in messages and "never reported" in messages


def test_subtree_cli_shows_totals_children_and_outbox(tree: Tree) -> None:
    tree.import_synthetic("gd.sz", cases=40, seed=2)
    assert not tree.sender("gd.sz").report_now().failed
    app = typer.Typer()
    subtree_cmd.register(app)
    stats_cmd.register(app)
    runner = CliRunner(env={"COLUMNS": "200", "SUPNET_DATA_DIR": None})

    result = runner.invoke(app, ["subtree", "--data-dir", str(tree.root_dir / "gd"), "--json", "--by", "source"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["node_id"] == "gd" and document["group_by"] == ["source"]
    assert [row["source"] for row in document["rows"]] == ["gd.sz"]
    assert document["rows"][0]["received"] == 40
    assert document["rows"][0]["rates"]["early_rate"] is not None
    # The CLI runs on the real clock, long after the test tree's reports: the child shows stale, gd.gz missing.
    states = {child["child_id"]: child["state"] for child in document["children"]}
    assert states == {"gd.gz": "missing", "gd.sz": "stale"}
    # A child never heard from counts as one node: its own subtree's size is unknown until it reports.
    assert document["completeness"] == {"nodes_in_subtree": 3, "nodes_reported_in_window": 1, "ratio": 1 / 3}

    leaf = runner.invoke(app, ["stats", "--subtree", "--json", "--data-dir", str(tree.root_dir / "gd.sz")])
    assert leaf.exit_code == 0, leaf.output
    leaf_document = json.loads(leaf.stdout)
    assert leaf_document["rows"][0]["received"] == 40
    assert leaf_document["outbox"]["last_sequence"] == 1 and leaf_document["outbox"]["pending"] == 0

    table = runner.invoke(app, ["subtree", "--data-dir", str(tree.root_dir / "gd"), "--by", "item"])
    assert table.exit_code == 0, table.output
    assert "stale" in table.stdout and "missing" in table.stdout and "1/3 nodes reported" in table.stdout

    bad = runner.invoke(app, ["subtree", "--data-dir", str(tree.root_dir / "gd"), "--by", "department"])
    assert bad.exit_code == 2 and "unknown dimension 'department'" in bad.output
